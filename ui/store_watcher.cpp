#include "store_watcher.h"

#include <sys/stat.h>

#include <QMessageBox>
#include <QTimer>

#include "workspace.h"

namespace upcycle::ui {

StoreWatcher::StoreWatcher(Workspace* ws, QWidget* dialogParent, int intervalMs)
    : QObject(ws), m_ws(ws), m_dialogParent(dialogParent) {
  setObjectName(QStringLiteral("storeWatcher"));
  m_present = identity(m_dev, m_ino);
  if (m_ws->store()) m_dataVersion = m_ws->store()->dataVersion();
  if (intervalMs > 0) {
    m_timer = new QTimer(this);
    connect(m_timer, &QTimer::timeout, this, &StoreWatcher::check);
    m_timer->start(intervalMs);
  }
}

QMessageBox* StoreWatcher::dialog() const { return m_dialog.data(); }

bool StoreWatcher::identity(uint64_t& dev, uint64_t& ino) const {
  struct stat st {};
  if (::stat(m_ws->dbPath().toLocal8Bit().constData(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  dev = static_cast<uint64_t>(st.st_dev);
  ino = static_cast<uint64_t>(st.st_ino);
  return true;
}

void StoreWatcher::notify(const QString& title, const QString& text) {
  if (m_dialog) m_dialog->close();
  m_dialog = new QMessageBox(QMessageBox::Warning, title, text, QMessageBox::Ok, m_dialogParent);
  m_dialog->setObjectName(QStringLiteral("storeChangedDialog"));
  m_dialog->setAttribute(Qt::WA_DeleteOnClose);
  m_dialog->open();  // not exec(): the window keeps running (and tests keep control)
}

StoreWatcher::Change StoreWatcher::check() {
  uint64_t dev = 0, ino = 0;
  const bool present = identity(dev, ino);
  Change change = Change::None;
  if (!present && m_present) {
    m_ws->reopen(false);  // closes the connection to the deleted file and opens nothing
    change = Change::Missing;
    notify(tr("Workspace file gone"),
           tr("The run store %1 was deleted or moved by another program. The runs shown are no longer "
              "stored anywhere this window can see; it will open the file again if it comes back. "
              "A run started now creates a new, empty store.")
               .arg(m_ws->dbPath()));
  } else if (present && !m_present) {
    m_ws->reopen(false);
    change = Change::Returned;
    notify(tr("Workspace file back"), tr("The run store %1 is back and has been opened again (%2 runs).")
                                          .arg(m_ws->dbPath())
                                          .arg(m_ws->runs().size()));
  } else if (present && (dev != m_dev || ino != m_ino)) {
    m_ws->reopen(false);
    change = Change::Replaced;
    notify(tr("Workspace file replaced"),
           tr("Another program replaced the run store %1 with a different file. The window now shows that "
              "file (%2 runs)%3.")
               .arg(m_ws->dbPath())
               .arg(m_ws->runs().size())
               .arg(m_ws->error().isEmpty() ? QString() : tr("; it could not be read: %1").arg(m_ws->error())));
  } else if (present && m_ws->store()) {
    // Written by another connection: reload only when the run list itself changed, so a run that
    // only adds metrics does not rebuild every panel every few seconds.
    try {
      const int64_t v = m_ws->store()->dataVersion();
      if (v != m_dataVersion) {
        const auto fresh = m_ws->store()->listRuns();
        const auto& shown = m_ws->runs();
        bool same = fresh.size() == shown.size();
        for (size_t i = 0; same && i < fresh.size(); ++i)
          same = fresh[i].id == shown[i].id && fresh[i].name == shown[i].name && fresh[i].status == shown[i].status &&
                 fresh[i].tags == shown[i].tags;
        if (!same) {
          m_ws->reload();
          change = Change::Modified;
        }
      }
    } catch (const std::exception&) {
      // A store that cannot be read now is reported by the next reload; nothing to do here.
    }
  }
  m_present = present;
  m_dev = dev;
  m_ino = ino;
  if (m_ws->store()) {
    try {
      m_dataVersion = m_ws->store()->dataVersion();
    } catch (const std::exception&) {
      m_dataVersion = -1;
    }
  }
  if (change != Change::None) Q_EMIT changed(change);
  return change;
}

}  // namespace upcycle::ui
