// test_ui's main: a QApplication on the offscreen platform, QSettings kept out of the user's files.
#include <gtest/gtest.h>

#include <QApplication>
#include <QStandardPaths>

#include "api/runtime.h"
#include "core/blas_kernels.h"

int main(int argc, char** argv) {
  upcycle::selectBlasKernels(argv);
  qputenv("QT_QPA_PLATFORM", "offscreen");
  QStandardPaths::setTestModeEnabled(true);  // QSettings and data paths under ~/.qttest
  QApplication app(argc, argv);
  QApplication::setOrganizationName(QStringLiteral("UpcycleWorkbenchTests"));
  QApplication::setApplicationName(QStringLiteral("test_ui"));
  upcycle::configureRuntime(0);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
