#pragma once
// QCustomPlot's header uses Qt's lower-case keywords (signals, foreach), which the whole project
// disables with QT_NO_KEYWORDS so they never collide with other headers. Map them for this header only.
#define signals Q_SIGNALS
#define slots Q_SLOTS
#define emit Q_EMIT
#define foreach Q_FOREACH
#include <qcustomplot.h>
#undef signals
#undef slots
#undef emit
#undef foreach
