// Data-parallel training on c10d's Gloo backend: 2 and 3 processes on this machine (loopback) train
// a tiny dense model and an 8-expert MoE with the real trainer, and each step is compared with the
// one-process run of the same global batches: losses to 1e-5 relative, and the parameters of every
// rank bit-identical after every step. Then the failure paths: a rank killed mid-run ends the
// others with an error naming it, and the run store records the run as failed and stays intact.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "api/models.h"
#include "api/pipeline.h"
#include "pipeline/experiment.h"
#include "core/atomic_file.h"
#include "data/demo_data.h"
#include "store/run_store.h"
#include "api/distributed.h"
#include <map>
#include "test_util.h"

using namespace upcycle;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Setup {
  test::TempDir dir;
  fs::path dense, moe, data;
  Setup() {
    const auto m = test::createTinyModels(dir.path(), 128, 8, 96, 3);
    dense = m.dense;
    moe = m.moe;
    data = dir / "train.jsonl";
    writeFileAtomically(data,
                        demoInstructionsJsonl(generateDemoInstructions(11, 10)));  // 70 records
  }
};

Setup& setup() {
  static Setup s;
  return s;
}

int runCommand(const std::string& cmd) {
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Runs the worker with `nproc` processes and returns each rank's record.
std::vector<json> train(const fs::path& model, int nproc, int steps, int batch, int accum,
                        double aux, double z, const std::string& tag) {
  const fs::path out = setup().dir / tag;
  const std::string cmd = "timeout 600 " + std::string(UPCYCLE_DIST_WORKER) + " " + model.string() +
                          " " + setup().data.string() + " " + out.string() + " " +
                          std::to_string(steps) + " " + std::to_string(batch) + " " +
                          std::to_string(accum) + " " + std::to_string(nproc) + " " +
                          std::to_string(aux) + " " + std::to_string(z);
  EXPECT_EQ(runCommand(cmd), 0) << cmd;
  std::vector<json> ranks;
  for (int r = 0; r < nproc; ++r) {
    const fs::path f = out.string() + ".rank-" + std::to_string(r) + ".json";
    if (!fs::exists(f)) {
      ADD_FAILURE() << "rank " << r << " wrote nothing: " << f;
      continue;
    }
    ranks.push_back(json::parse(test::readBytes(f)));
  }
  return ranks;
}

void expectRelClose(double a, double b, double rel, const std::string& what) {
  EXPECT_LE(std::abs(a - b), rel * std::max(std::abs(b), 1e-12))
      << what << ": " << a << " vs " << b;
}

// nproc ranks against one process: same steps, losses within 1e-5, every rank's weights identical.
void compare(const fs::path& model, int nproc, int steps, int batch, int accum, double aux,
             double z, const std::string& tag) {
  const auto one = train(model, 1, steps, batch, accum, aux, z, tag + "-1");
  const auto many =
      train(model, nproc, steps, batch, accum, aux, z, tag + "-" + std::to_string(nproc));
  ASSERT_EQ(one.size(), 1u);
  ASSERT_EQ(many.size(), static_cast<size_t>(nproc));
  EXPECT_EQ(one[0]["world"], 1);
  const json& ref = one[0]["steps"];
  ASSERT_EQ(ref.size(), static_cast<size_t>(steps));
  for (int r = 0; r < nproc; ++r) {
    EXPECT_EQ(many[r]["world"], nproc);
    EXPECT_EQ(many[r]["backend"], "gloo");
    const json& got = many[r]["steps"];
    ASSERT_EQ(got.size(), ref.size()) << "rank " << r;
    for (int s = 0; s < steps; ++s) {
      const std::string at = tag + " rank " + std::to_string(r) + " step " + std::to_string(s + 1);
      expectRelClose(got[s]["loss"], ref[s]["loss"], 1e-5, at + " loss");
      expectRelClose(got[s]["lm_loss"], ref[s]["lm_loss"], 1e-5, at + " lm_loss");
      if (aux > 0) expectRelClose(got[s]["aux_loss"], ref[s]["aux_loss"], 1e-5, at + " aux_loss");
      if (z > 0) expectRelClose(got[s]["z_loss"], ref[s]["z_loss"], 1e-5, at + " z_loss");
      expectRelClose(got[s]["grad_norm"], ref[s]["grad_norm"], 1e-4, at + " grad_norm");
      EXPECT_EQ(got[s]["tokens"], ref[s]["tokens"]) << at;  // the global batch, not the rank's part
      EXPECT_EQ(got[s]["checksum"], many[0]["steps"][s]["checksum"])
          << at << ": weights differ from rank 0's";
    }
  }
}

TEST(DataParallel, DenseTwoRanksMatchOneProcess) {
  compare(setup().dense, 2, 10, 8, 1, 0, 0, "dense2");
}

// 5 rows over 3 ranks (1, 2, 2 rows) and two micro-batches per step: accumulation across ranks.
TEST(DataParallel, DenseThreeRanksWithAccumulation) {
  compare(setup().dense, 3, 10, 5, 2, 0, 0, "dense3");
}

// The load-balancing loss needs the routing counts of the whole micro-batch (all-reduced in the
// forward); the z-loss and the LM loss are token-weighted over it.
TEST(DataParallel, MoeTwoRanksMatchOneProcess) {
  compare(setup().moe, 2, 10, 8, 1, 0.01, 0.001, "moe2");
}

// 70 records in micro-batches of 4: the epoch's last micro-batch has 2 rows, so one of 3 ranks has
// none of it and still takes part in every collective (zero routing counts, zero gradients).
TEST(DataParallel, MoeThreeRanksWithAnEmptyRank) {
  compare(setup().moe, 3, 10, 4, 2, 0.01, 0.001, "moe3");
}

// The GUI's path: runExperiment on this thread with `nproc: 2` makes this process rank 0 and starts
// `upcycle run` as rank 1. The whole pipeline (pretraining, SFT with checkpoints, sparse upcycling,
// post-training, sharded evaluation) gives the one-process numbers, and the store records how.
TEST(DataParallel, ExperimentWithNprocMatchesOneProcessAndRecordsTheWorld) {
  test::TempDir dir;
  ::setenv("UPCYCLE_CLI", UPCYCLE_CLI, 1);
  auto experiment = [&](int nproc, const std::string& tag) {
    return parseExperiment(
        "name: dp\nseed: 5\nout: " + (dir / tag).string() + "\nnproc: " + std::to_string(nproc) +
            "\nbase: {pretrain: {steps: 6, documents: 40, hidden: 32, ff: 64, layers: 2, heads: 2, kv_heads: 1, "
            "block: 32, batch_size: 4}}\ndata: {generate: {per_domain: 3, eval_per_domain: 2}, template: compact}\n"
            "sft: {epochs: 1, save_every: 0.5, batch_size: 7}\npost: {epochs: 1, batch_size: 7, aux_loss_coef: 0.01}\n"
            "eval: {accuracy: true, max_new_tokens: 2}\nruns:\n  - {name: sparse, method: sparse, experts: 4, top_k: 2}\n",
        "test");
  };
  RunStore store1(dir / "one.db"), store2(dir / "two.db");
  const ExperimentReport one = runExperiment(experiment(1, "one"), nullptr, nullptr, &store1);
  const ExperimentReport two = runExperiment(experiment(2, "two"), nullptr, nullptr, &store2);
  ASSERT_EQ(one.runs.size(), 1u);
  ASSERT_EQ(two.runs.size(), 1u);
  EXPECT_EQ(one.runs[0].steps, two.runs[0].steps);
  expectRelClose(two.runs[0].finalTrainLoss, one.runs[0].finalTrainLoss, 1e-4, "final train loss");
  expectRelClose(two.runs[0].eval.overall.loss, one.runs[0].eval.overall.loss, 1e-4, "eval loss");
  EXPECT_EQ(two.runs[0].eval.overall.tokens, one.runs[0].eval.overall.tokens);
  EXPECT_EQ(two.runs[0].eval.overall.records, one.runs[0].eval.overall.records);
  ASSERT_EQ(two.runs[0].eval.domains.size(), 7u);
  for (const auto& [d, f] : one.runs[0].eval.domains) {
    ASSERT_TRUE(two.runs[0].eval.domains.count(d)) << d;
    EXPECT_EQ(two.runs[0].eval.domains.at(d).records, f.records) << d;
    expectRelClose(two.runs[0].eval.domains.at(d).loss, f.loss, 1e-4, d + " loss");
  }
  // Rank 0 alone recorded: the same runs as one process, with the world size and backend.
  const auto runs = store2.listRuns();
  ASSERT_EQ(runs.size(), store1.listRuns().size());
  const auto detail = store2.run(runs.back().id);
  std::map<std::string, std::string> params(detail.params.begin(), detail.params.end());
  EXPECT_EQ(params["distributed.world_size"], "2");
  EXPECT_EQ(params["distributed.backend"], "gloo");
  EXPECT_TRUE(fs::exists(dir / "two" / "runs" / "sparse"));
  EXPECT_FALSE(distInfo().active) << "the group ends with the experiment";
}

// Failures.

std::vector<pid_t> childrenOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  pid_t c;
  while (in >> c) out.push_back(c);
  return out;
}

struct Spawned {
  pid_t pid = -1;
  fs::path err;
};

Spawned spawnCli(const std::vector<std::string>& args, const fs::path& errFile) {
  Spawned s;
  s.err = errFile;
  s.pid = ::fork();
  if (s.pid == 0) {
    ::setenv("UPCYCLE_DIST_TIMEOUT", "60", 1);
    const int fd = ::open(errFile.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return s;
}

// Waits up to `seconds` for the process; returns its wait status, or -1 (then it is killed).
int waitFor(pid_t pid, int seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  int status = 0;
  while (std::chrono::steady_clock::now() < until) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

// Waits until `f` exists (the run has got that far).
bool waitForFile(const fs::path& f, int seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < until) {
    if (fs::exists(f)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

TEST(DataParallel, KilledRankEndsTheOthersWithItsName) {
  test::TempDir dir;
  const fs::path out = dir / "train";
  Spawned s = spawnCli({UPCYCLE_CLI, "train", "--model", setup().dense.string(), "--data",
                        setup().data.string(), "--out", out.string(), "--max-steps", "100000",
                        "--save-steps", "1", "--batch-size", "4", "--threads", "1", "--nproc", "2"},
                       dir / "stderr");
  ASSERT_TRUE(waitForFile(out / "checkpoint-2" / "config.json", 120))
      << test::readBytes(dir / "stderr");
  const auto kids = childrenOf(s.pid);
  ASSERT_EQ(kids.size(), 1u) << "rank 0 should have started one worker";
  const auto t0 = std::chrono::steady_clock::now();
  ::kill(kids[0], SIGKILL);
  const int status =
      waitFor(s.pid, 60);  // well inside the 60 s collective timeout: found, not waited out
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_NE(status, -1) << "rank 0 did not end within 60 s of its worker's death";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  const std::string err = test::readBytes(dir / "stderr");
  EXPECT_NE(err.find("upcycle: error: data-parallel training stopped"), std::string::npos) << err;
  EXPECT_NE(err.find("rank 1"), std::string::npos) << err;
  EXPECT_LT(secs, 30) << err;
  // No half-written checkpoint under a final name: every checkpoint folder that exists is whole.
  for (const auto& e : fs::directory_iterator(out)) {
    if (e.path().filename().string().rfind("checkpoint-", 0) == 0 && e.path().extension() != ".tmp") {
      EXPECT_TRUE(fs::exists(e.path() / "trainer_state.json")) << e.path();
    }
  }
}

TEST(DataParallel, KilledRankLeavesTheRunFailedInAnIntactStore) {
  test::TempDir dir;
  const fs::path exp = dir / "exp.yaml", db = dir / "runs.db", out = dir / "out";
  writeFileAtomically(exp, R"(name: dist-kill
seed: 1
base:
  pretrain: {steps: 100000, documents: 200, hidden: 32, ff: 64, layers: 1, heads: 2, kv_heads: 1, block: 32, batch_size: 4}
data:
  generate: {per_domain: 10, eval_per_domain: 2}
sft: {epochs: 1, save_every: 0.5, batch_size: 8}
post: {epochs: 1, batch_size: 8}
runs:
  - {name: dense, method: dense}
)");
  Spawned s = spawnCli({UPCYCLE_CLI, "run", exp.string(), "--out", out.string(), "--db",
                        db.string(), "--threads", "1", "--nproc", "2"},
                       dir / "stderr");
  ASSERT_TRUE(waitForFile(out / "base" / "init" / "config.json", 120))
      << test::readBytes(dir / "stderr");
  std::this_thread::sleep_for(std::chrono::seconds(2));  // into the pretraining steps
  const auto kids = childrenOf(s.pid);
  ASSERT_EQ(kids.size(), 1u);
  ::kill(kids[0], SIGKILL);
  const int status = waitFor(s.pid, 60);
  ASSERT_NE(status, -1) << "rank 0 did not end within 60 s";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  const std::string err = test::readBytes(dir / "stderr");
  EXPECT_NE(err.find("rank 1"), std::string::npos) << err;
  RunStore store(db);
  EXPECT_EQ(store.integrityCheck(), "ok");
  const auto runs = store.listRuns();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].name, "dist-kill:base");
  EXPECT_EQ(runs[0].status, "failed");
}

// Ctrl-C reaching one worker alone (here: SIGINT to rank 1) stops every rank before the same step:
// the cancel flag is all-reduced at each step's start. Rank 0 ends as a cancelled run does (130).
TEST(DataParallel, CancelOnOneRankStopsAllAtTheSameStep) {
  test::TempDir dir;
  const fs::path out = dir / "train";
  Spawned s = spawnCli({UPCYCLE_CLI, "train", "--model", setup().dense.string(), "--data", setup().data.string(),
                        "--out", out.string(), "--max-steps", "100000", "--save-steps", "1", "--batch-size", "4",
                        "--threads", "1", "--nproc", "2"},
                       dir / "stderr");
  ASSERT_TRUE(waitForFile(out / "checkpoint-2" / "config.json", 120)) << test::readBytes(dir / "stderr");
  const auto kids = childrenOf(s.pid);
  ASSERT_EQ(kids.size(), 1u);
  ::kill(kids[0], SIGINT);
  const int status = waitFor(s.pid, 60);
  ASSERT_NE(status, -1) << "rank 0 did not stop within 60 s of the worker's cancel";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 130) << status << " " << test::readBytes(dir / "stderr");
  EXPECT_EQ(test::readBytes(dir / "stderr").find("error"), std::string::npos) << test::readBytes(dir / "stderr");
}

// A loss that becomes NaN is the global loss, the same on every rank: all stop with the same error.
TEST(DataParallel, NanStopsEveryRankWithOneError) {
  test::TempDir dir;
  Spawned s = spawnCli({UPCYCLE_CLI, "train", "--model", setup().dense.string(), "--data", setup().data.string(),
                        "--out", (dir / "train").string(), "--max-steps", "50", "--lr", "1e30", "--clip", "0",
                        "--batch-size", "4", "--threads", "1", "--nproc", "2"},
                       dir / "stderr");
  const int status = waitFor(s.pid, 120);
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  const std::string err = test::readBytes(dir / "stderr");
  EXPECT_NE(err.find("the loss became"), std::string::npos) << err;
  EXPECT_EQ(err.find("rank 1 failed"), std::string::npos) << "rank 0 should see the NaN itself: " << err;
}

}  // namespace
