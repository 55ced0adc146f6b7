// upcycle-studio: the GUI executable. Thin: builds the main window and runs the event loop.
#include <QApplication>

#include "main_window.h"

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName(QStringLiteral("Upcycle Studio"));
  QApplication::setOrganizationName(QStringLiteral("UpcycleWorkbench"));
  QApplication::setApplicationVersion(QStringLiteral(UPCYCLE_VERSION));
  upcycle::ui::MainWindow w;
  w.show();
  return app.exec();
}
