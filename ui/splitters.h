#pragma once
// Splitters that never collapse a view to nothing and that View → Reset layout can put back: each
// splitter made here remembers its default proportions. Thread-safety: GUI thread only.
#include <QList>
#include <QSplitter>

namespace upcycle::ui {

// A splitter whose children cannot be dragged to zero size; `defaults` are its default sizes (only
// their proportions matter), applied now and by resetSplitter.
QSplitter* makeSplitter(Qt::Orientation o, const QString& objectName, const QList<int>& defaults = {});
// Sets the defaults of a splitter and applies them.
void setDefaultSizes(QSplitter* s, const QList<int>& defaults);
// The default proportions, scaled to the splitter's current length (equal parts when none were set).
QList<int> defaultSizesFor(const QSplitter* s);
void resetSplitter(QSplitter* s);

}  // namespace upcycle::ui
