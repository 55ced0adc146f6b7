#pragma once
// Helpers for the GUI tests: a run store filled with hand-written values (so every plotted number can
// be checked against what the test itself wrote), and waiting on signals.
#include <QCoreApplication>
#include <QElapsedTimer>
#include <QSignalSpy>
#include <QString>
#include <functional>

#include "store/run_store.h"
#include "test_util.h"

namespace upcycle::test {

// Spins the event loop until `done()` or the timeout; true when done.
inline bool waitFor(const std::function<bool()>& done, int timeoutMs) {
  QElapsedTimer t;
  t.start();
  while (!done()) {
    if (t.elapsed() > timeoutMs) return false;
    QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
  }
  return true;
}

// A tiny experiment that runs in seconds: pretrain a 1-layer model, one sparse run.
inline std::string tinyExperiment(const std::filesystem::path& out, int pretrainSteps, const std::string& runs = "") {
  return "name: tiny\nseed: 5\nout: " + out.string() +
         "\nbase: {pretrain: {steps: " + std::to_string(pretrainSteps) +
         ", documents: 40, hidden: 32, ff: 64, layers: 2, heads: 2, kv_heads: 1, block: 32, batch_size: 4}}\n"
         "data: {generate: {per_domain: 3, eval_per_domain: 1}, template: compact}\n"
         "sft: {epochs: 1, save_every: 0.5, batch_size: 7}\npost: {epochs: 1, batch_size: 7}\n"
         "eval: {accuracy: true, max_new_tokens: 2}\nruns:\n" +
         (runs.empty() ? std::string("  - {name: sparse, method: sparse, experts: 4, top_k: 2}\n") : runs);
}

// A Trainer output folder DIR/sft with checkpoint-4 and checkpoint-8 (copies of the llama_gqa fixture);
// `history(step)` gives each checkpoint's trainer_state.json log_history (a JSON array).
inline void writeTrainerOutput(const std::filesystem::path& dir, const std::function<std::string(int)>& history) {
  const auto fx = fixtures() / "models/llama_gqa";
  for (int step : {4, 8}) {
    const auto ck = dir / ("sft/checkpoint-" + std::to_string(step));
    std::filesystem::create_directories(ck);
    for (const char* file : {"config.json", "model.safetensors"}) std::filesystem::copy_file(fx / file, ck / file);
    writeBytes(ck / "trainer_state.json", "{\"global_step\": " + std::to_string(step) + ", \"log_history\": " + history(step) + "}");
  }
}

// Two MoE runs with known analysis blobs and metrics, plus a UpIT run with lineage.
struct HandStore {
  int64_t a = 0, b = 0, upit = 0;
};

inline HandStore fillHandStore(RunStore& s) {
  HandStore h;
  h.a = s.beginRun("alpha", "hand", "sparse", 1, "cpu",
                   {{"run.method", "sparse"}, {"run.experts", "2"}, {"run.top_k", "1"}, {"post.lr", "0.001"}, {"seed", "1"}});
  s.addBlobs(h.a, {{"weight_similarity", 0, "", 2, 2, {1.0, 0.5, 0.5, 1.0}},
                   {"weight_similarity", 1, "", 2, 2, {1.0, 0.9, 0.9, 1.0}},
                   {"converted/weight_similarity", 0, "", 2, 2, {1.0, 1.0, 1.0, 1.0}},
                   {"converted/weight_similarity", 1, "", 2, 2, {1.0, 1.0, 1.0, 1.0}},
                   {"routing_shares", 0, "", 1, 2, {0.7, 0.3}},
                   {"routing_shares", 0, "math", 1, 2, {0.9, 0.1}},
                   {"routing_shares", 0, "code", 1, 2, {0.4, 0.6}},
                   {"routing_shares", 1, "", 1, 2, {0.5, 0.5}},
                   {"routing_stats", 0, "", 1, 3, {0.55, 0.6108643020548935, 1.4}},
                   {"routing_stats", 1, "", 1, 3, {0.65, 0.6931471805599453, 1.0}}});
  s.addMetrics(h.a, {{"post:alpha", "loss", 1, 3.0}, {"post:alpha", "loss", 2, 2.5}, {"post:alpha", "loss", 3, 2.25},
                     {"analysis", "diversity", 0, 0.3}, {"eval", "accuracy", 0, 0.40}, {"eval", "loss", 0, 1.5}});
  s.addEval(h.a, {{"", 1.5, 4.48, 0.40, 100, 10}, {"math", 1.2, 3.3, 0.6, 50, 5}});
  s.finishRun(h.a, "finished");
  h.b = s.beginRun("beta", "hand", "drop", 1, "cpu",
                   {{"run.method", "drop"}, {"run.experts", "2"}, {"run.top_k", "1"}, {"run.ratio", "0.5"}, {"post.lr", "0.001"}, {"seed", "1"}});
  s.addBlobs(h.b, {{"weight_similarity", 0, "", 2, 2, {1.0, -0.2, -0.2, 1.0}},
                   {"weight_similarity", 1, "", 2, 2, {1.0, 0.1, 0.1, 1.0}},
                   {"routing_shares", 0, "", 1, 2, {0.45, 0.55}},
                   {"routing_shares", 1, "", 1, 2, {0.2, 0.8}}});
  s.addMetrics(h.b, {{"post:beta", "loss", 1, 3.5}, {"post:beta", "loss", 2, 2.0}, {"analysis", "diversity", 0, 0.8},
                     {"eval", "accuracy", 0, 0.55}, {"eval", "loss", 0, 1.25}});
  s.addEval(h.b, {{"", 1.25, 3.49, 0.55, 100, 10}, {"math", 1.0, 2.7, 0.8, 50, 5}});
  s.finishRun(h.b, "finished");
  h.upit = s.beginRun("gamma", "hand", "upit", 1, "cpu",
                      {{"run.method", "upit"}, {"run.experts", "5"}, {"run.top_k", "2"}, {"run.checkpoints", "2"},
                       {"run.ga.dare_p", "0.3"}, {"run.ga.merge", "linear"}});
  // Children 2, 3 from the checkpoint experts; 4 from a child and a checkpoint expert (depth 2).
  s.addLineage(h.upit, {{2, 0, 1, 0.25, 0.3, 0.8, 11, "linear"}, {3, 1, 0, 0.75, 0.3, 0.8, 12, "linear"},
                        {4, 2, 0, 0.5, 0.3, 0.4, 13, "linear"}});
  s.addMetrics(h.upit, {{"analysis", "diversity", 0, 0.1}});
  s.finishRun(h.upit, "finished");
  return h;
}

}  // namespace upcycle::test
