// The GUI stub opens offscreen with its title, welcome text and version.
#include <gtest/gtest.h>

#include <QApplication>
#include <QLabel>
#include <QStatusBar>

#include "main_window.h"

TEST(MainWindow, OpensWithTitleAndVersion) {
  upcycle::ui::MainWindow w;
  w.show();
  EXPECT_TRUE(w.isVisible());
  EXPECT_EQ(w.windowTitle(), QStringLiteral("Upcycle Studio"));
  auto* label = w.findChild<QLabel*>("welcomeLabel");
  ASSERT_NE(label, nullptr);
  EXPECT_TRUE(label->text().contains("Mixture-of-Experts"));
  EXPECT_TRUE(w.statusBar()->currentMessage().contains(UPCYCLE_VERSION));
}

int main(int argc, char** argv) {
  qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
