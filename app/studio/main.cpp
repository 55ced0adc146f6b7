// upcycle-studio: the GUI executable. Thin: parses the command line, builds the main window and runs
// the event loop.   upcycle-studio [--db FILE] [EXPERIMENT.yaml]
#include <QApplication>
#include <QCommandLineParser>
#include <QIcon>
#include <QMessageBox>
#include <QTimer>
#include <cstdio>

#include "api/runtime.h"
#include "core/blas_kernels.h"
#include "main_window.h"

int main(int argc, char** argv) {
  upcycle::selectBlasKernels(argv);  // may re-execute the program once, with faster OpenBLAS kernels
  QApplication app(argc, argv);
  QApplication::setApplicationName(QStringLiteral("Upcycle Studio"));
  QApplication::setOrganizationName(QStringLiteral("UpcycleWorkbench"));
  QApplication::setApplicationVersion(QStringLiteral(UPCYCLE_VERSION));
  QApplication::setDesktopFileName(QStringLiteral("io.github.upcycle_workbench.Studio"));
  QApplication::setWindowIcon(QIcon::fromTheme(QStringLiteral("upcycle-workbench"), QIcon(QStringLiteral(":/icons/upcycle-workbench-256.png"))));
  QCommandLineParser parser;
  parser.setApplicationDescription(QStringLiteral("Upcycle Workbench: turn dense LLM checkpoints into Mixture-of-Experts models."));
  parser.addHelpOption();
  parser.addVersionOption();
  QCommandLineOption db(QStringLiteral("db"), QStringLiteral("The workspace's run store (default: $UPCYCLE_DB or ~/.local/share/upcycle-workbench/runs.db)."),
                        QStringLiteral("FILE"));
  parser.addOption(db);
  QCommandLineOption shot(QStringLiteral("screenshot"),
                          QStringLiteral("Save a screenshot of the window to FILE (PNG) two seconds after start, then quit."),
                          QStringLiteral("FILE"));
  parser.addOption(shot);
  QCommandLineOption demo(QStringLiteral("demo"), QStringLiteral("Run the built-in demo experiment at start."));
  QCommandLineOption quick(QStringLiteral("quick"), QStringLiteral("With --demo: the quick demo (every stage at toy size)."));
  parser.addOption(demo);
  parser.addOption(quick);
  parser.addPositionalArgument(QStringLiteral("experiment"), QStringLiteral("An experiment YAML file to open."), QStringLiteral("[EXPERIMENT.yaml]"));
  parser.process(app);
  upcycle::configureRuntime(0);  // OpenMP may report 1 thread otherwise

  upcycle::ui::MainWindow w(parser.value(db));
  w.show();
  const QStringList files = parser.positionalArguments();
  if (!files.isEmpty()) {
    const QString err = w.openExperiment(files.front());
    if (!err.isEmpty()) QMessageBox::warning(&w, QObject::tr("Cannot open the experiment"), err);
  }
  if (parser.isSet(demo)) QTimer::singleShot(0, &w, [&w, &parser, &quick] { w.runDemo(parser.isSet(quick)); });
  if (parser.isSet(shot)) {
    const QString file = parser.value(shot);
    QTimer::singleShot(2000, &w, [&w, file] {
      const bool ok = w.grab().save(file, "PNG");
      std::fprintf(ok ? stdout : stderr, "%s %s\n", ok ? "screenshot:" : "cannot write", qPrintable(file));
      QApplication::exit(ok ? 0 : 1);
    });
  }
  return app.exec();
}
