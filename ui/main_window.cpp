#include "main_window.h"

#include <QLabel>
#include <QStatusBar>

namespace upcycle::ui {

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent) {
  setObjectName("MainWindow");
  setWindowTitle(QStringLiteral("Upcycle Studio"));
  auto* label = new QLabel(
      QStringLiteral("<h2>Upcycle Workbench</h2><p>Turn dense checkpoints into Mixture-of-Experts models.</p>"
                     "<p>The workbench panels arrive in a later release; the <tt>upcycle</tt> command line "
                     "runs every pipeline today.</p>"),
      this);
  label->setObjectName("welcomeLabel");
  label->setAlignment(Qt::AlignCenter);
  label->setWordWrap(true);
  setCentralWidget(label);
  statusBar()->showMessage(QStringLiteral("Upcycle Workbench %1 - Qt %2").arg(UPCYCLE_VERSION, qVersion()));
  resize(900, 600);
}

}  // namespace upcycle::ui
