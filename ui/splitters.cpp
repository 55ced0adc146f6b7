#include "splitters.h"

#include <QVariant>
#include <numeric>

namespace upcycle::ui {

namespace {
const char* kDefaults = "upcycleDefaultSizes";
}

QSplitter* makeSplitter(Qt::Orientation o, const QString& objectName, const QList<int>& defaults) {
  auto* s = new QSplitter(o);
  s->setObjectName(objectName);
  s->setChildrenCollapsible(false);
  if (!defaults.isEmpty()) s->setProperty(kDefaults, QVariant::fromValue(defaults));
  return s;
}

void setDefaultSizes(QSplitter* s, const QList<int>& defaults) {
  s->setProperty(kDefaults, QVariant::fromValue(defaults));
  s->setSizes(defaults);
}

QList<int> defaultSizesFor(const QSplitter* s) {
  QList<int> d = s->property(kDefaults).value<QList<int>>();
  const int n = s->count();
  if (d.size() != n) d = QList<int>(n, 1);
  const QList<int> now = s->sizes();
  const int length = std::accumulate(now.begin(), now.end(), 0);
  const int weight = std::accumulate(d.begin(), d.end(), 0);
  if (length <= 0 || weight <= 0) return d;
  QList<int> out;
  for (int v : d) out << static_cast<int>(static_cast<long long>(v) * length / weight);
  return out;
}

void resetSplitter(QSplitter* s) { s->setSizes(defaultSizesFor(s)); }

}  // namespace upcycle::ui
