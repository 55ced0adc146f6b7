#pragma once
// Data-parallel training on PyTorch's c10d (torch-free header, shared by the CLI and the GUI).
//
// A process joins a group when it was started by torchrun or SLURM (RANK / WORLD_SIZE / LOCAL_RANK
// / MASTER_ADDR / MASTER_PORT, or SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID), or starts one
// itself with `--nproc N` (`nproc:` in experiment files): it becomes rank 0 and launches
// ranks 1..N-1 as copies of a command on this machine. Rendezvous through c10d's TCPStore (rank 0
// hosts it) or a FileStore; Gloo on the CPU, NCCL on CUDA (rank r on cuda:LOCAL_RANK).
//
// While a group is up, the trainer splits every micro-batch across the ranks and all-reduces the
// gradients (dist/reducer.h), evaluation is sharded and reduced, and only rank 0 writes files or
// the run store (isDistWriter). Everything else (conversion, the GA, analysis) runs replicated:
// every rank computes the same result from the same seeds, so no rank waits on another outside
// training. Thread-safety: initDistributed / shutdownDistributed on one thread; the group is then
// used by the thread that trains.
#include <filesystem>
#include <string>
#include <vector>

namespace upcycle {

struct DistInfo {
  bool active = false;  // a group of world > 1 is up in this process
  int rank = 0;
  int world = 1;
  int localRank = 0;
  std::string backend;     // "gloo" or "nccl"
  std::string rendezvous;  // "tcp://HOST:PORT" or "file://PATH"
};

struct DistLaunch {
  // Local processes to run (this one is rank 0); ignored when the environment already names a rank.
  int nproc = 1;
  // What ranks 1..nproc-1 run: argv (argv[0] is the executable). Their standard output is discarded
  // (rank 0 reports); their standard error is kept, prefixed by the rank in our error lines.
  std::vector<std::string> childArgs;
  std::string device = "auto";  // cpu: Gloo; cuda: NCCL (auto: CUDA when present)
  // "" or "tcp": a TCPStore at MASTER_ADDR:MASTER_PORT (with --nproc: 127.0.0.1 and a free port);
  // "file:PATH": a FileStore at PATH (all ranks must see the file).
  std::string store;
  // How long a collective may wait for the other ranks before failing (UPCYCLE_DIST_TIMEOUT
  // overrides).
  int timeoutSeconds = 300;
};

// The ranks named by the environment: world 1 when none. Throws UserError on inconsistent values.
DistInfo distFromEnvironment();

// Joins (or, with nproc > 1, starts) the group and returns its info; world 1 is a no-op. One group
// per process: a second call while one is up is refused.
DistInfo initDistributed(const DistLaunch& launch);
DistInfo distInfo();
// True unless this process is a rank > 0 of a group: only the writer writes checkpoints, exports,
// data files, logs and the run store.
bool isDistWriter();
// Leaves the group: waits for the local workers it started (a worker that failed becomes an error
// naming its rank) and closes the store. Safe to call when no group is up.
void shutdownDistributed();
// Tells the other ranks why this one is leaving (they report "rank R failed: MESSAGE"), then tears
// the group down without waiting. For top-level error handlers.
void abortDistributed(const std::string& message);

// RAII for a verb's body: initDistributed on construction; on destruction shutdownDistributed, or
// abortDistributed when an exception is in flight.
class DistScope {
 public:
  explicit DistScope(const DistLaunch& launch);
  ~DistScope();
  DistScope(const DistScope&) = delete;
  DistScope& operator=(const DistScope&) = delete;
  const DistInfo& info() const { return m_info; }
  void fail(const std::string& message);  // abortDistributed(message), once

 private:
  DistInfo m_info;
  int m_uncaught;
  bool m_done = false;
};

// The `upcycle` command line program that workers run: $UPCYCLE_CLI, this program when it is
// `upcycle`, else `upcycle` beside this program (the workbench's build and install layouts).
std::filesystem::path cliExecutable();

// A file holding `content` for the life of the object (in the temporary directory), e.g. the
// experiment handed to worker processes.
class TempFile {
 public:
  TempFile(const std::string& stem, const std::string& suffix, const std::string& content);
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::filesystem::path& path() const { return m_path; }

 private:
  std::filesystem::path m_path;
};

}  // namespace upcycle
