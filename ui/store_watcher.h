#pragma once
// Notices a workspace file that changed or disappeared underneath the workbench (another program
// deleted, moved, replaced or wrote it) and keeps the window honest about it:
//  - written by another process (PRAGMA data_version moved) and the run list differs: reload;
//  - replaced (another file now has the name: a new inode): the old connection is closed, the new
//    file opened, and a dialog says so;
//  - gone: the connection to the deleted file is closed (nothing is written into a file no one can
//    see), a dialog says so, and the file is opened again when it comes back.
// It only stat()s the path: opening the database outside SQLite and closing that descriptor would
// drop the process's POSIX locks on it (SQLite's "how to corrupt a database", 2.2.1).
// Thread-safety: GUI thread only.
#include <QObject>
#include <QPointer>
#include <QString>
#include <cstdint>

class QMessageBox;
class QTimer;
class QWidget;

namespace upcycle::ui {

class Workspace;

class StoreWatcher : public QObject {
  Q_OBJECT
 public:
  enum class Change { None, Modified, Replaced, Missing, Returned };
  // Checks every `intervalMs` (0: only when check() is called); dialogs are children of dialogParent.
  StoreWatcher(Workspace* ws, QWidget* dialogParent, int intervalMs = 2000);

  QMessageBox* dialog() const;  // the last notice shown, while it is open

 public Q_SLOTS:
  Change check();

 Q_SIGNALS:
  void changed(upcycle::ui::StoreWatcher::Change change);

 private:
  bool identity(uint64_t& dev, uint64_t& ino) const;
  void notify(const QString& title, const QString& text);
  Workspace* m_ws;
  QWidget* m_dialogParent;
  QTimer* m_timer = nullptr;
  QPointer<QMessageBox> m_dialog;
  uint64_t m_dev = 0, m_ino = 0;
  bool m_present = false;
  int64_t m_dataVersion = -1;
};

}  // namespace upcycle::ui
