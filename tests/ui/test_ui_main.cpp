// test_ui's main: a QApplication on the offscreen platform, QSettings kept out of the user's files and
// out of every other test process's (ctest runs test cases in parallel processes: a shared settings
// file let one test's saved layout reach another's).
#include <gtest/gtest.h>

#include <QApplication>
#include <QSettings>
#include <QStandardPaths>
#include <QTemporaryDir>

#include "api/runtime.h"
#include "core/blas_kernels.h"

int main(int argc, char** argv) {
  upcycle::selectBlasKernels(argv);
  qputenv("QT_QPA_PLATFORM", "offscreen");
  QStandardPaths::setTestModeEnabled(true);  // QSettings and data paths under ~/.qttest
  QApplication app(argc, argv);
  QApplication::setOrganizationName(QStringLiteral("UpcycleWorkbenchTests"));
  QApplication::setApplicationName(QStringLiteral("test_ui"));
  QTemporaryDir settings;  // this process's own, removed at exit
  for (auto format : {QSettings::NativeFormat, QSettings::IniFormat}) QSettings::setPath(format, QSettings::UserScope, settings.path());
  upcycle::configureRuntime(0);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
