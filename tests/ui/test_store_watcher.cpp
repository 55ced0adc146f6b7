// The workbench notices a workspace file changed, replaced or deleted by another program
// (StoreWatcher): it reloads, reopens, or says so in a dialog, and never keeps a connection to a
// deleted file. Values are the test's own writes.
#include <gtest/gtest.h>

#include <QMessageBox>
#include <QSignalSpy>
#include <fstream>
#include <set>

#include "main_window.h"
#include "store_watcher.h"
#include "ui_test_util.h"
#include "workspace.h"

using namespace upcycle;
using namespace upcycle::ui;
using upcycle::test::TempDir;
namespace fs = std::filesystem;

namespace {
// Descriptors this process holds on deleted files named like the store (the state of the workbench
// in the damaged workspace of issue 19).
int deletedStoreDescriptors(const std::string& base) {
  int n = 0;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const std::string t = fs::read_symlink(e.path(), ec).string();
    if (!ec && t.find(base) != std::string::npos && t.find("(deleted)") != std::string::npos) ++n;
  }
  return n;
}
void addRuns(const fs::path& db, const std::vector<std::string>& names) {
  RunStore s(db);
  for (const auto& n : names) s.finishRun(s.beginRun(n, "w", "sparse", 1, "cpu", {}), "finished");
}
std::vector<std::string> names(const Workspace& ws) {
  std::vector<std::string> out;
  for (const auto& r : ws.runs()) out.push_back(r.name);
  return out;
}
}  // namespace

TEST(StoreWatcher, ReloadsReopensAndSaysSoWhenTheFileChangesUnderneath) {
  TempDir dir;
  const fs::path db = dir / "runs.db";
  addRuns(db, {"a", "b"});
  QWidget parent;
  Workspace ws(QString::fromStdString(db.string()));
  StoreWatcher w(&ws, &parent, 0);
  QSignalSpy changed(&w, &StoreWatcher::changed);
  ASSERT_EQ(names(ws), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(w.check(), StoreWatcher::Change::None);

  // Another process's connection renames a run and adds one: reloaded, no dialog.
  {
    RunStore other(db);
    other.setName(1, "a2");
  }
  addRuns(db, {"c"});
  EXPECT_EQ(w.check(), StoreWatcher::Change::Modified);
  EXPECT_EQ(names(ws), (std::vector<std::string>{"a2", "b", "c"}));
  EXPECT_EQ(w.dialog(), nullptr);
  // Metrics alone do not rebuild the panels.
  {
    RunStore other(db);
    other.addMetrics(1, {{"post", "loss", 1, 2.0}});
  }
  EXPECT_EQ(w.check(), StoreWatcher::Change::None);

  // Replaced by another store (renamed over it, as a restore from a backup would): reopened.
  addRuns(dir / "other.db", {"x", "y", "z", "w"});
  fs::rename(dir / "other.db", db);
  EXPECT_EQ(w.check(), StoreWatcher::Change::Replaced);
  EXPECT_EQ(names(ws), (std::vector<std::string>{"x", "y", "z", "w"}));
  ASSERT_NE(w.dialog(), nullptr);
  EXPECT_TRUE(w.dialog()->text().contains(QStringLiteral("replaced"))) << w.dialog()->text().toStdString();
  EXPECT_TRUE(w.dialog()->text().contains(QStringLiteral("4 runs")));
  EXPECT_EQ(deletedStoreDescriptors("runs.db"), 0) << "the replaced file's connection was kept";

  // Deleted: the connection is closed, the dialog says so, nothing is created.
  for (const char* s : {"", "-wal", "-shm"}) fs::remove(db.string() + s);
  EXPECT_EQ(w.check(), StoreWatcher::Change::Missing);
  EXPECT_EQ(ws.store(), nullptr);
  EXPECT_TRUE(ws.runs().empty());
  ASSERT_NE(w.dialog(), nullptr);
  EXPECT_TRUE(w.dialog()->text().contains(QStringLiteral("deleted or moved")));
  EXPECT_EQ(deletedStoreDescriptors("runs.db"), 0);
  EXPECT_FALSE(fs::exists(db)) << "the watcher must not recreate a file the user removed";

  // It comes back: opened again.
  addRuns(db, {"back"});
  EXPECT_EQ(w.check(), StoreWatcher::Change::Returned);
  EXPECT_EQ(names(ws), (std::vector<std::string>{"back"}));
  ASSERT_NE(w.dialog(), nullptr);
  EXPECT_TRUE(w.dialog()->text().contains(QStringLiteral("1 runs")));
  EXPECT_EQ(changed.count(), 4);
}

TEST(StoreWatcher, TheMainWindowWatchesItsWorkspaceAndMapsOneSqlite) {
  TempDir dir;
  const fs::path db = dir / "runs.db";
  addRuns(db, {"a"});
  MainWindow win(QString::fromStdString(db.string()));
  win.show();
  auto* w = win.findChild<StoreWatcher*>(QStringLiteral("storeWatcher"));
  ASSERT_NE(w, nullptr);
  for (const char* s : {"", "-wal", "-shm"}) fs::remove(db.string() + s);
  // The window's own timer notices (no call to check()).
  ASSERT_TRUE(test::waitFor([&] { return win.findChild<QMessageBox*>(QStringLiteral("storeChangedDialog")) != nullptr; }, 10000));
  EXPECT_EQ(win.workspace()->store(), nullptr);
  EXPECT_EQ(deletedStoreDescriptors("runs.db"), 0);
  // The GUI process, with its plugins loaded, maps one SQLite library (two would keep separate locks).
  std::ifstream maps("/proc/self/maps");
  std::set<std::string> libs;
  for (std::string line; std::getline(maps, line);)
    if (line.find("sqlite") != std::string::npos && line.find('/') != std::string::npos) libs.insert(line.substr(line.find('/')));
  EXPECT_EQ(libs.size(), 1u);
}
