// upcycle-studio: the GUI executable. Thin: parses the command line, builds the main window and runs
// the event loop.   upcycle-studio [--db FILE] [EXPERIMENT.yaml]
#include <QApplication>
#include <QCommandLineParser>
#include <QMessageBox>

#include "api/runtime.h"
#include "main_window.h"

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName(QStringLiteral("Upcycle Studio"));
  QApplication::setOrganizationName(QStringLiteral("UpcycleWorkbench"));
  QApplication::setApplicationVersion(QStringLiteral(UPCYCLE_VERSION));
  QApplication::setDesktopFileName(QStringLiteral("io.github.upcycle_workbench.Studio"));
  QCommandLineParser parser;
  parser.setApplicationDescription(QStringLiteral("Upcycle Workbench: turn dense LLM checkpoints into Mixture-of-Experts models."));
  parser.addHelpOption();
  parser.addVersionOption();
  QCommandLineOption db(QStringLiteral("db"), QStringLiteral("The workspace's run store (default: $UPCYCLE_DB or ~/.local/share/upcycle-workbench/runs.db)."),
                        QStringLiteral("FILE"));
  parser.addOption(db);
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
  return app.exec();
}
