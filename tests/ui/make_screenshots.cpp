// Not a test: drives upcycle-studio's main window through a real demo run and saves a screenshot of
// every panel (scripts/screenshots.sh runs it under Xvfb), at each window size asked for:
//   ui_screenshots OUT_DIR WORKSPACE_DIR [--quick] [--sizes 1280x800,1920x1080]
// The first size's pictures go to OUT_DIR, the others' to OUT_DIR/WxH/.
#include <QApplication>
#include <QDir>
#include <QDockWidget>
#include <QElapsedTimer>
#include <QScreen>
#include <QScrollArea>
#include <QSettings>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTabWidget>
#include <QTimer>
#include <cstdio>

#include "api/runtime.h"
#include "core/blas_kernels.h"
#include "checkpoints_panel.h"
#include "compare_panel.h"
#include "seeds_view.h"
#include "engine_worker.h"
#include "experiment_panel.h"
#include "lineage_panel.h"
#include "main_window.h"
#include "routing_panel.h"
#include "run_panel.h"
#include "runs_panel.h"
#include "curves_view.h"
#include "run_detail.h"
#include "similarity_panel.h"
#include "store/run_store.h"
#include "workspace.h"

using namespace upcycle::ui;

namespace {
void settle(int ms = 300) {
  QElapsedTimer t;
  t.start();
  while (t.elapsed() < ms) QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
}
void shoot(MainWindow& w, const QString& dir, const QString& name) {
  settle();
  const QString path = dir + QLatin1Char('/') + name + QStringLiteral(".png");
  // The whole screen as the X server shows it (Xvfb), cropped to the window.
  QPixmap shot = w.screen()->grabWindow(0, w.x(), w.y(), w.frameGeometry().width(), w.frameGeometry().height());
  if (shot.isNull()) shot = w.grab();
  shot.save(path);
  std::printf("wrote %s\n", qPrintable(path));
}
qint64 runNamed(Workspace* ws, const std::string& method) {
  for (auto it = ws->runs().rbegin(); it != ws->runs().rend(); ++it)
    if (it->method == method) return it->id;
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  upcycle::selectBlasKernels(argv);
  QStandardPaths::setTestModeEnabled(true);  // the default layout, not the user's
  QApplication app(argc, argv);
  QApplication::setOrganizationName(QStringLiteral("UpcycleWorkbenchScreenshots"));
  QApplication::setApplicationName(QStringLiteral("Upcycle Studio"));
  if (argc < 3) {
    std::fprintf(stderr, "usage: ui_screenshots OUT_DIR WORKSPACE_DIR [--quick]\n");
    return 2;
  }
  const QString out = QString::fromLocal8Bit(argv[1]);
  const QString wsDir = QString::fromLocal8Bit(argv[2]);
  bool quick = false;
  QList<QSize> sizes;
  for (int i = 3; i < argc; ++i) {
    const QString a = QString::fromLocal8Bit(argv[i]);
    if (a == QLatin1String("--quick")) quick = true;
    if (a == QLatin1String("--sizes") && i + 1 < argc)
      for (const QString& wh : QString::fromLocal8Bit(argv[++i]).split(QLatin1Char(',')))
        sizes << QSize(wh.section(QLatin1Char('x'), 0, 0).toInt(), wh.section(QLatin1Char('x'), 1, 1).toInt());
  }
  if (sizes.isEmpty()) sizes << QSize(1280, 800);
  QDir().mkpath(out);
  QDir().mkpath(wsDir);
  upcycle::configureRuntime(0);
  QSettings().clear();
  MainWindow w(wsDir + QStringLiteral("/runs.db"));
  w.move(0, 0);
  w.resize(sizes.front());
  w.show();
  settle();
  w.resize(sizes.front());
  w.resetLayout();
  settle();
  std::printf("window %dx%d, minimum %dx%d\n", w.width(), w.height(), w.minimumSizeHint().width(), w.minimumSizeHint().height());
  for (QDockWidget* d : w.findChildren<QDockWidget*>())
    std::printf("  %s: minimum %dx%d\n", qPrintable(d->objectName()), d->minimumSizeHint().width(), d->minimumSizeHint().height());
  if (qEnvironmentVariableIsSet("UPCYCLE_SIZES_ONLY")) return 0;
  shoot(w, out, QStringLiteral("start"));

  QSignalSpy finished(w.engine()->worker(), &EngineWorker::finished);
  // Capture the Run panel mid-way through post-training, then at the end.
  bool midShot = false;
  QObject::connect(w.engine()->worker(), &EngineWorker::runFinished, &w, [&](qint64, const QString& name) {
    if (!midShot && name == QLatin1String("sparse")) {
      midShot = true;
      QTimer::singleShot(1500, &w, [&] { shoot(w, out, QStringLiteral("run-live")); });
    }
  });
  w.runDemo(quick);
  if (!finished.wait(60 * 60 * 1000)) return 1;
  settle(500);
  if (!finished.at(0).at(0).toBool()) {
    std::fprintf(stderr, "demo failed: %s\n", qPrintable(finished.at(0).at(2).toString()));
    return 1;
  }
  shoot(w, out, QStringLiteral("run"));

  Workspace* ws = w.workspace();
  const qint64 sparse = runNamed(ws, "sparse"), drop = runNamed(ws, "drop"), upit = runNamed(ws, "upit"),
               dense = runNamed(ws, "dense");
  for (int k = 0; k < sizes.size(); ++k) {
    const QString dir = k == 0 ? out : out + QStringLiteral("/%1x%2").arg(sizes[k].width()).arg(sizes[k].height());
    QDir().mkpath(dir);
    w.resize(sizes[k]);
    settle();
    w.resetLayout();
    w.showPanel(QStringLiteral("runDock"));
    if (k > 0) shoot(w, dir, QStringLiteral("run"));
    std::printf("window %dx%d\n", w.width(), w.height());

    w.experimentPanel()->selectRun(3);
    w.showPanel(QStringLiteral("experimentDock"));
    shoot(w, dir, QStringLiteral("method-ga"));

    const QString sft = QFileInfo(wsDir + QStringLiteral("/out/") + (quick ? "demo-quick" : "demo") + QStringLiteral("/seed-0/sft")).absoluteFilePath();
    if (k == 0) {
      w.checkpointsPanel()->addPath(sft);
      QDir base(QFileInfo(sft).dir().filePath(QStringLiteral("base")));
      const QStringList bases = base.entryList({QStringLiteral("checkpoint-*")}, QDir::Dirs, QDir::Name);
      if (!bases.isEmpty()) w.checkpointsPanel()->setBase(base.filePath(bases.back()));
    }
    w.showPanel(QStringLiteral("checkpointsDock"));
    shoot(w, dir, QStringLiteral("checkpoints"));

    w.showPanel(QStringLiteral("similarityDock"));
    w.similarityPanel()->showRun(drop);
    w.similarityPanel()->setLayer(1);
    w.similarityPanel()->setKind(2);  // output CKA: Drop-Upcycling permutes neurons, so weight cosine says little
    shoot(w, dir, QStringLiteral("similarity"));
    w.similarityPanel()->showRun(upit);
    w.similarityPanel()->setKind(1);
    shoot(w, dir, QStringLiteral("similarity-upit-deltas"));

    w.showPanel(QStringLiteral("routingDock"));
    w.routingPanel()->showRun(upit);
    w.routingPanel()->setLayer(1);
    shoot(w, dir, QStringLiteral("routing"));

    w.showPanel(QStringLiteral("lineageDock"));
    w.lineagePanel()->showRun(upit);
    shoot(w, dir, QStringLiteral("lineage"));

    // Compare the dense run and the three MoE runs (ticked, as Compare does): every tab shows the four,
    // Similarity and Routing say why the dense one has no panel.
    w.runsPanel()->selectRuns({dense, sparse, drop, upit});
    ws->requestCompare({dense, sparse, drop, upit});
    w.comparePanel()->setDiffOnly(true);
    w.comparePanel()->tabs()->setCurrentIndex(0);
    shoot(w, dir, QStringLiteral("compare-params"));
    w.comparePanel()->curves()->setSmoothing(0.6);
    w.comparePanel()->tabs()->setCurrentIndex(1);
    shoot(w, dir, QStringLiteral("compare-curves"));
    w.comparePanel()->curves()->setSmoothing(0);
    w.comparePanel()->tabs()->setCurrentIndex(2);
    shoot(w, dir, QStringLiteral("compare-similarity"));
    w.comparePanel()->tabs()->setCurrentIndex(3);
    shoot(w, dir, QStringLiteral("compare-routing"));
    w.comparePanel()->tabs()->setCurrentIndex(4);
    shoot(w, dir, QStringLiteral("compare-metrics"));
    // Across seeds: the demo's runs over its 3 seeds, paired against the dense SFT.
    w.comparePanel()->seedsView()->setExperiment(quick ? QStringLiteral("demo-quick") : QStringLiteral("demo"));
    w.comparePanel()->seedsView()->setBaseline(QStringLiteral("dense-sft"));
    w.comparePanel()->tabs()->setCurrentWidget(w.comparePanel()->seedsView());
    shoot(w, dir, QStringLiteral("compare-seeds"));
    w.runsPanel()->setGroupSeeds(true);
    w.runsPanel()->toggleGroup(quick ? QStringLiteral("demo-quick") : QStringLiteral("demo"), QStringLiteral("upit"));
    w.showPanel(QStringLiteral("runsDock"));
    shoot(w, dir, QStringLiteral("runs-grouped"));
    w.runsPanel()->toggleGroup(quick ? QStringLiteral("demo-quick") : QStringLiteral("demo"), QStringLiteral("upit"));
    w.runsPanel()->setGroupSeeds(false);

    // The run detail page, opened as a double-click opens it.
    RunDetailDialog detail(ws, upit, &w);
    detail.move(w.x() + 50, w.y() + 50);
    detail.show();
    detail.tabs()->setCurrentIndex(2);
    settle();
    detail.grab().save(dir + QStringLiteral("/run-detail.png"));
    std::printf("wrote %s/run-detail.png\n", qPrintable(dir));
    detail.close();

    // UpIT with LoRA experts: the built-in study (run from the source folder, as scripts/screenshots.sh
    // does), its upit-lora run, and the SFT form's LoRA fields scrolled into view.
    const QString loraStudy = QStringLiteral("resources/experiments/studies/upit-lora.yaml");
    if (QFileInfo::exists(loraStudy) && w.experimentPanel()->loadFile(loraStudy).isEmpty()) {
      w.experimentPanel()->selectRun(2);
      w.showPanel(QStringLiteral("experimentDock"));
      settle();
      if (QWidget* rank = w.experimentPanel()->findChild<QWidget*>(QStringLiteral("lora.rank")))
        for (QScrollArea* area : w.experimentPanel()->findChildren<QScrollArea*>())
          if (area->isAncestorOf(rank) && area->isVisible()) area->ensureWidgetVisible(rank, 20, 120);
      settle();
      shoot(w, dir, QStringLiteral("method-lora"));
    }
  }
  QSettings().clear();
  return 0;
}
