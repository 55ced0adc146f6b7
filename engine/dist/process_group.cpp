#define UPCYCLE_C10D_COMPAT  // core/torch_compat.h: C10dBackend
#include "dist/process_group.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "api/runtime.h"
#include "core/error.h"
#include "core/torch_compat.h"
#include "model/model_io.h"

#ifdef UPCYCLE_HAVE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef UPCYCLE_HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

extern char** environ;

namespace upcycle {

namespace {

using Clock = std::chrono::steady_clock;

std::string envOr(const char* name, const std::string& fallback = "") {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

int envInt(const char* name, int fallback, int lo, int hi) {
  const std::string v = envOr(name);
  if (v.empty()) return fallback;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v.c_str(), &end, 10);
  UPCYCLE_CHECK(end != v.c_str() && *end == '\0' && errno == 0 && x >= lo && x <= hi,
                "environment variable ", name, "=\"", v, "\" is not a whole number in [", lo, ", ",
                hi, "]");
  return static_cast<int>(x);
}

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

std::string errKey(int r) { return "upcycle/error/" + std::to_string(r); }
std::string beatKey(int r) { return "upcycle/heartbeat/" + std::to_string(r); }
std::string readyKey(int r) { return "upcycle/ready/" + std::to_string(r); }
const char* kAckKey = "upcycle/error-ack";

// A local worker started by --nproc.
struct Child {
  int rank = 0;
  pid_t pid = -1;
  int status = 0;  // waitpid status once reaped
  bool reaped = false;
};

std::string describeExit(const Child& c) {
  const std::string who = "rank " + std::to_string(c.rank) + " (pid " + std::to_string(c.pid) + ")";
  if (WIFSIGNALED(c.status))
    return who + " was killed by signal " + std::to_string(WTERMSIG(c.status));
  if (WIFEXITED(c.status))
    return who + " exited with status " + std::to_string(WEXITSTATUS(c.status));
  return who + " ended";
}

pid_t spawnChild(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  UPCYCLE_CHECK(!args.empty(), "no command to start the worker processes with");
  std::vector<char*> argv, envp;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const pid_t pid = ::fork();
  UPCYCLE_CHECK(pid >= 0, "could not start a worker process: ", std::strerror(errno));
  if (pid == 0) {
    // The worker's reports would repeat rank 0's: its standard output goes nowhere, errors stay.
    const int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0) ::dup2(null, 1);
    ::execve(argv[0], argv.data(), envp.data());
    std::fprintf(stderr, "upcycle: error: could not run %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  return pid;
}

// The environment of this process with `set` replacing or adding variables.
std::vector<std::string> environmentWith(
    const std::vector<std::pair<std::string, std::string>>& set) {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    bool replaced = false;
    for (const auto& [k, v] : set) replaced = replaced || k == key;
    if (!replaced) env.push_back(kv);
  }
  for (const auto& [k, v] : set) env.push_back(k + "=" + v);
  return env;
}

class Group;
std::mutex g_mutex;  // guards g_group
std::unique_ptr<Group> g_group;

// Everything one group owns. The collective calls are made by the training thread only.
class Group : public DistGroup {
 public:
  Group(DistInfo info, c10::intrusive_ptr<c10d::Store> store, std::chrono::milliseconds timeout,
        torch::Device dev, std::vector<Child> children)
      : m_info(std::move(info)),
        m_store(std::move(store)),
        m_timeout(timeout),
        m_device(dev),
        m_children(std::move(children)) {}

  ~Group() override { stopHeartbeat(); }

  const DistInfo& info() const override { return m_info; }
  torch::Device device() const override { return m_device; }

  void connect() {
    // Each rank says it is here; rank 0 waits for all while watching its local workers, so a worker
    // that cannot start is reported at once instead of after the timeout.
    storeCall([&] { m_store->set(readyKey(m_info.rank), bytes("1")); });
    if (m_info.rank == 0) {
      const auto until = Clock::now() + m_timeout;
      for (int r = 1; r < m_info.world; ++r) {
        while (!storeCall([&] { return m_store->check({readyKey(r)}); })) {
          if (auto dead = reapChildren(); !dead.empty())
            throw UserError("data-parallel start-up failed: " + dead + " before joining the group");
          UPCYCLE_CHECK(Clock::now() < until, "data-parallel start-up: rank ", r,
                        " did not join within ", m_timeout.count() / 1000, " s (",
                        m_info.rendezvous, ")");
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
    }
    try {
      makeBackend();
    } catch (const UserError&) {
      throw;
    } catch (const std::exception& e) {
      throw UserError(std::string("data-parallel start-up failed (") + m_info.backend +
                      "): " + e.what());
    }
    startHeartbeat();
  }

  void allreduceSum(torch::Tensor& t, const char* what) override {
    wait(allreduceSumAsync(t), what);
  }

  c10::intrusive_ptr<c10d::Work> allreduceSumAsync(torch::Tensor& t) override {
    std::vector<at::Tensor> v{t};
    return m_backend->allreduce(v);
  }

  void wait(const c10::intrusive_ptr<c10d::Work>& w, const char* what) override {
    try {
      w->wait(m_timeout);
    } catch (const std::exception& e) {
      failed(what, e.what());
    }
  }

  void broadcast(torch::Tensor& t, int root, const char* what) override {
    std::vector<at::Tensor> v{t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    try {
      m_backend->broadcast(v, o)->wait(m_timeout);
    } catch (const std::exception& e) {
      failed(what, e.what());
    }
  }

  void barrier(const char* what) override {
    auto t = torch::zeros({1}, torch::TensorOptions().device(m_device));
    allreduceSum(t, what);
  }

  // Why a collective failed, naming the rank when it can be found; then throws.
  [[noreturn]] void failed(const char* what, const std::string& raw) {
    throw UserError(std::string("data-parallel training stopped during ") + what + " on rank " +
                    std::to_string(m_info.rank) + ": " + explain() + " [" + firstLine(raw) + "]");
  }

  // Publishes this rank's error for the others (who then name it) before the group goes away.
  void publishError(const std::string& message) {
    try {
      storeCall([&] { m_store->set(errKey(m_info.rank), bytes(firstLine(message))); });
    } catch (...) {
    }
  }

  // Normal end: wait for the local workers and report the first that failed.
  void finish() {
    stopHeartbeat();
    m_backend.reset();  // closes the connections once every rank is done
    std::string failures;
    for (auto& c : m_children) {
      if (!c.reaped) {
        ::waitpid(c.pid, &c.status, 0);
        c.reaped = true;
      }
      const bool ok =
          WIFEXITED(c.status) && (WEXITSTATUS(c.status) == 0 || WEXITSTATUS(c.status) == 130);
      if (!ok && failures.empty()) failures = describeExit(c);
    }
    if (!failures.empty())
      throw UserError("data-parallel run: " + failures + " (its error is above)");
  }

  // Failure: let the workers read our error, then make sure none outlives us.
  void abort() {
    stopHeartbeat();
    if (m_info.rank == 0 && m_info.world > 1) {
      // Rank 0 hosts the TCPStore: keep it up until the others have read why (at most 5 s).
      const auto until = Clock::now() + std::chrono::seconds(5);
      try {
        while (Clock::now() < until &&
               storeCall([&] { return m_store->add(kAckKey, 0); }) < m_info.world - 1 &&
               !allChildrenGone())
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
      } catch (...) {
      }
    }
    for (auto& c : m_children)
      if (!c.reaped) ::kill(c.pid, SIGTERM);
    const auto until = Clock::now() + std::chrono::seconds(5);
    while (!allChildrenGone() && Clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    for (auto& c : m_children)
      if (!c.reaped) {
        ::kill(c.pid, SIGKILL);
        ::waitpid(c.pid, &c.status, 0);
        c.reaped = true;
      }
    m_backend.reset();
  }

 private:
  static std::string firstLine(std::string s) {
    const auto nl = s.find('\n');
    if (nl != std::string::npos) s.resize(nl);
    return s;
  }

  template <class F>
  auto storeCall(F&& f) -> decltype(f()) {
    std::lock_guard<std::mutex> lock(m_storeMutex);
    return f();
  }

  void makeBackend() {
#ifdef UPCYCLE_HAVE_NCCL
    if (m_info.backend == "nccl") {
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = m_timeout;
      m_backend =
          c10::make_intrusive<c10d::ProcessGroupNCCL>(m_store, m_info.rank, m_info.world, o);
      return;
    }
#endif
#ifdef UPCYCLE_HAVE_GLOO
    if (m_info.backend == "gloo") {
      auto o = c10d::ProcessGroupGloo::Options::create(m_timeout);
      const std::string iface = envOr("GLOO_SOCKET_IFNAME");
      const std::string host = envOr("MASTER_ADDR", "127.0.0.1");
      if (!iface.empty())
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
      else if (host == "localhost" || host.rfind("127.", 0) == 0)
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else
        o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      o->threads = 2;
      m_backend =
          c10::make_intrusive<c10d::ProcessGroupGloo>(m_store, m_info.rank, m_info.world, o);
      return;
    }
#endif
    throw UserError("this build has no " + m_info.backend + " backend for data-parallel training" +
                    (m_info.backend == "gloo" ? " (install libgloo-dev and reconfigure)" : ""));
  }

  void startHeartbeat() {
    m_beating = true;
    m_heartbeat = std::thread([this] {
      std::unique_lock<std::mutex> lock(m_beatMutex);
      while (m_beating) {
        try {
          storeCall([&] { return m_store->add(beatKey(m_info.rank), 1); });
        } catch (...) {
          return;  // the store's host is gone; the next collective says so
        }
        m_beatCv.wait_for(lock, std::chrono::milliseconds(500), [this] { return !m_beating; });
      }
    });
  }

  void stopHeartbeat() {
    {
      std::lock_guard<std::mutex> lock(m_beatMutex);
      m_beating = false;
    }
    m_beatCv.notify_all();
    if (m_heartbeat.joinable()) m_heartbeat.join();
  }

  bool allChildrenGone() {
    reapChildren();
    for (const auto& c : m_children)
      if (!c.reaped) return false;
    return true;
  }

  // Reaps local workers that have ended; returns a description of the first one that failed.
  std::string reapChildren() {
    std::string out;
    for (auto& c : m_children) {
      if (!c.reaped && ::waitpid(c.pid, &c.status, WNOHANG) == c.pid) c.reaped = true;
      if (c.reaped && out.empty() && !(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0))
        out = describeExit(c);
    }
    return out;
  }

  std::string explain() {
    stopHeartbeat();
    if (auto dead = reapChildren(); !dead.empty()) return dead;
    try {
      storeCall([&] { m_store->setTimeout(std::chrono::seconds(3)); });
      // The first other rank that published an error, acknowledged so rank 0 may take its store
      // down.
      auto published = [&]() -> std::string {
        for (int r = 0; r < m_info.world; ++r) {
          if (r == m_info.rank || !storeCall([&] { return m_store->check({errKey(r)}); })) continue;
          const std::string msg = text(storeCall([&] { return m_store->get(errKey(r)); }));
          storeCall([&] { return m_store->add(kAckKey, 1); });
          return "rank " + std::to_string(r) + " failed: " + msg;
        }
        return "";
      };
      if (auto e = published(); !e.empty()) return e;
      // Heartbeats advance twice a second: a rank whose count stands still for 2 s has stopped.
      auto counts = [&] {
        std::vector<int64_t> c(static_cast<size_t>(m_info.world));
        for (int r = 0; r < m_info.world; ++r)
          c[r] = storeCall([&] { return m_store->add(beatKey(r), 0); });
        return c;
      };
      const auto before = counts();
      std::this_thread::sleep_for(std::chrono::seconds(2));
      if (auto dead = reapChildren(); !dead.empty()) return dead;
      const auto after = counts();
      std::string stalled;
      for (int r = 0; r < m_info.world; ++r)
        if (r != m_info.rank && after[r] == before[r])
          stalled += (stalled.empty() ? "" : ", ") + std::to_string(r);
      if (auto e = published(); !e.empty()) return e;  // an error may have been published meanwhile
      if (!stalled.empty())
        return "rank " + stalled +
               " stopped responding (killed, crashed or hung: no heartbeat for 2 s)";
      return "a collective failed or timed out after " + std::to_string(m_timeout.count() / 1000) +
             " s while every rank was alive";
    } catch (const std::exception&) {
      return m_info.rank == 0
                 ? "the rendezvous store failed"
                 : "rank 0, which hosts the rendezvous store, is gone (killed or crashed)";
    }
  }

  DistInfo m_info;
  c10::intrusive_ptr<c10d::Store> m_store;
  std::chrono::milliseconds m_timeout;
  torch::Device m_device;
  std::vector<Child> m_children;
  std::mutex m_storeMutex;
  c10::intrusive_ptr<C10dBackend> m_backend;
  std::thread m_heartbeat;
  std::mutex m_beatMutex;
  std::condition_variable m_beatCv;
  bool m_beating = false;
};

}  // namespace

DistGroup* DistGroup::current() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_group.get();
}

DistInfo distFromEnvironment() {
  DistInfo d;
  const bool torchrun = !envOr("WORLD_SIZE").empty();
  const bool slurm = !torchrun && !envOr("SLURM_NTASKS").empty() && !envOr("SLURM_PROCID").empty();
  if (!torchrun && !slurm) return d;
  d.world = envInt(torchrun ? "WORLD_SIZE" : "SLURM_NTASKS", 1, 1, 1 << 16);
  d.rank = envInt(torchrun ? "RANK" : "SLURM_PROCID", 0, 0, d.world - 1);
  d.localRank = envInt(torchrun ? "LOCAL_RANK" : "SLURM_LOCALID", 0, 0, 1 << 16);
  UPCYCLE_CHECK(!torchrun || !envOr("RANK").empty(),
                "WORLD_SIZE is set but RANK is not (torchrun sets both)");
  return d;
}

DistInfo initDistributed(const DistLaunch& launch) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    UPCYCLE_CHECK(!g_group, "a data-parallel group is already up in this process");
  }
  UPCYCLE_CHECK(launch.nproc >= 1 && launch.nproc <= 256, "nproc must be in [1, 256], got ",
                launch.nproc);
  DistInfo d = distFromEnvironment();
  const bool spawn = d.world == 1 && launch.nproc > 1;
  if (spawn) d.world = launch.nproc;
  if (d.world == 1) return d;

  const int timeoutS = envInt("UPCYCLE_DIST_TIMEOUT", launch.timeoutSeconds, 1, 24 * 3600);
  UPCYCLE_CHECK(timeoutS >= 1, "the data-parallel timeout must be at least 1 s, got ", timeoutS);
  const std::chrono::milliseconds timeout(int64_t(timeoutS) * 1000);
  const torch::Device dev = resolveDevice(launch.device);
  d.backend = dev.is_cuda() ? "nccl" : "gloo";
  torch::Device commDev = torch::kCPU;
  if (dev.is_cuda()) {
    UPCYCLE_CHECK(d.localRank < static_cast<int>(torch::cuda::device_count()), "LOCAL_RANK ",
                  d.localRank, " has no GPU (", torch::cuda::device_count(), " visible)");
    commDev = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(d.localRank));
  }

  const std::string storeSpec = envOr("UPCYCLE_DIST_STORE", launch.store);
  c10::intrusive_ptr<c10d::Store> store;
  std::vector<std::pair<std::string, std::string>> childEnv;
  try {
    if (storeSpec.rfind("file:", 0) == 0) {
      const std::string path = storeSpec.substr(5);
      UPCYCLE_CHECK(!path.empty(), "the file store needs a path (file:PATH)");
      store = c10::make_intrusive<c10d::FileStore>(path, d.world);
      d.rendezvous = "file://" + path;
      childEnv.push_back({"UPCYCLE_DIST_STORE", storeSpec});
    } else {
      UPCYCLE_CHECK(storeSpec.empty() || storeSpec == "tcp",
                    "store must be tcp or file:PATH, got \"", storeSpec, "\"");
      c10d::TCPStoreOptions so;
      so.isServer = d.rank == 0;
      so.numWorkers = static_cast<size_t>(d.world);
      so.waitWorkers = false;  // connect() waits, watching the local workers
      so.timeout = timeout;
      std::string host = envOr("MASTER_ADDR", spawn ? "127.0.0.1" : "");
      if (host.empty() && !envOr("SLURM_LAUNCH_NODE_IPADDR").empty())
        host = envOr("SLURM_LAUNCH_NODE_IPADDR");
      UPCYCLE_CHECK(!host.empty(), "MASTER_ADDR is not set (the address of rank 0's machine)");
      if (spawn) {
        so.port = 0;  // a free port, handed to the workers
      } else {
        UPCYCLE_CHECK(!envOr("MASTER_PORT").empty(),
                      "MASTER_PORT is not set (the rendezvous port on rank 0's machine)");
        so.port = static_cast<uint16_t>(envInt("MASTER_PORT", 29500, 1, 65535));
      }
      auto tcp = c10::make_intrusive<c10d::TCPStore>(host, so);
      d.rendezvous = "tcp://" + host + ":" + std::to_string(tcp->getPort());
      childEnv.push_back({"MASTER_ADDR", host});
      childEnv.push_back({"MASTER_PORT", std::to_string(tcp->getPort())});
      store = tcp;
    }
  } catch (const UserError&) {
    throw;
  } catch (const std::exception& e) {
    std::string m = e.what();
    if (const auto nl = m.find('\n'); nl != std::string::npos) m.resize(nl);
    throw UserError(
        "data-parallel rendezvous failed (" +
        (storeSpec.empty() ? std::string("TCPStore at MASTER_ADDR:MASTER_PORT") : storeSpec) +
        "): " + m);
  }

  std::vector<Child> children;
  if (spawn) {
    childEnv.push_back({"WORLD_SIZE", std::to_string(d.world)});
    childEnv.push_back({"LOCAL_WORLD_SIZE", std::to_string(d.world)});
    childEnv.push_back({"UPCYCLE_DIST_TIMEOUT", std::to_string(timeoutS)});
    for (int r = 1; r < d.world; ++r) {
      auto env = childEnv;
      env.push_back({"RANK", std::to_string(r)});
      env.push_back({"LOCAL_RANK", std::to_string(r)});
      Child c;
      c.rank = r;
      c.pid = spawnChild(launch.childArgs, environmentWith(env));
      children.push_back(c);
    }
  }
  d.active = true;
  auto g = std::make_unique<Group>(d, store, timeout, commDev, std::move(children));
  try {
    g->connect();
  } catch (...) {
    g->abort();
    throw;
  }
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_group = std::move(g);
  }
  // Ranks on one machine share its cores (as torchrun's OMP_NUM_THREADS=1 intends): each takes its
  // part unless fewer intra-op threads than cores were asked for.
  const int local = spawn ? d.world : envInt("LOCAL_WORLD_SIZE", 1, 1, 1 << 16);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (local > 1 && at::get_num_threads() >= cores) configureRuntime(std::max(1, cores / local));
  return d;
}

DistInfo distInfo() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_group ? g_group->info() : DistInfo{};
}

bool isDistWriter() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return !g_group || g_group->info().rank == 0;
}

void shutdownDistributed() {
  std::unique_ptr<Group> g;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g = std::move(g_group);
  }
  if (g) g->finish();
}

void abortDistributed(const std::string& message) {
  std::unique_ptr<Group> g;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g = std::move(g_group);
  }
  if (!g) return;
  g->publishError(message);
  g->abort();
}

DistScope::DistScope(const DistLaunch& launch) : m_uncaught(std::uncaught_exceptions()) {
  m_info = initDistributed(launch);
}

void DistScope::fail(const std::string& message) {
  if (m_done) return;
  m_done = true;
  abortDistributed(message);
}

DistScope::~DistScope() {
  if (m_done) return;
  m_done = true;
  if (std::uncaught_exceptions() > m_uncaught) {
    abortDistributed("an error (see that rank's output)");
    return;
  }
  try {
    shutdownDistributed();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "upcycle: error: %s\n", e.what());
  }
}

std::filesystem::path cliExecutable() {
  if (const std::string env = envOr("UPCYCLE_CLI"); !env.empty()) return env;
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  UPCYCLE_CHECK(!ec, "cannot find this program's path (/proc/self/exe): ", ec.message());
  const std::filesystem::path cli =
      self.filename() == "upcycle" ? self : self.parent_path() / "upcycle";
  UPCYCLE_CHECK(std::filesystem::exists(cli), "the upcycle command line program is not at ",
                cli.string(), " (set UPCYCLE_CLI to its path)");
  return cli;
}

TempFile::TempFile(const std::string& stem, const std::string& suffix, const std::string& content) {
  std::string tmpl =
      (std::filesystem::temp_directory_path() / (stem + "-XXXXXX" + suffix)).string();
  const int fd = ::mkstemps(tmpl.data(), static_cast<int>(suffix.size()));
  UPCYCLE_CHECK(fd >= 0, "cannot create a temporary file ", tmpl, ": ", std::strerror(errno));
  m_path = tmpl;
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n <= 0) {
      ::close(fd);
      std::filesystem::remove(m_path);
      throw UserError("cannot write the temporary file " + tmpl + ": " + std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

TempFile::~TempFile() {
  std::error_code ec;
  std::filesystem::remove(m_path, ec);
}

void broadcastModule(torch::nn::Module& module) {
  DistGroup* g = DistGroup::current();
  if (!g) return;
  torch::NoGradGuard ng;
  auto sync = [&](torch::Tensor t) {
    if (!t.defined()) return;
    if (t.device() == g->device() && t.is_contiguous()) {
      g->broadcast(t, 0, "the start-up broadcast of the parameters");
      return;
    }
    auto tmp = t.to(g->device()).contiguous();
    g->broadcast(tmp, 0, "the start-up broadcast of the parameters");
    t.copy_(tmp);
  };
  for (auto& p : module.parameters()) sync(p);
  for (auto& b : module.buffers()) sync(b);
}

void allreduceDoubles(std::vector<double>& values, const char* what) {
  DistGroup* g = DistGroup::current();
  if (!g || values.empty()) return;
  auto t = torch::tensor(values, torch::kDouble).to(g->device());
  g->allreduceSum(t, what);
  t = t.cpu();
  std::memcpy(values.data(), t.data_ptr<double>(), values.size() * sizeof(double));
}

}  // namespace upcycle
