#pragma once
// The workbench's main window. Stub for the foundation: it opens and shows the version; the panels
// come with the GUI issue. Thread-safety: GUI thread only.
#include <QMainWindow>

namespace upcycle::ui {

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  explicit MainWindow(QWidget* parent = nullptr);
};

}  // namespace upcycle::ui
