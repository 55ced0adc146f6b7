#include "core/atomic_file.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace upcycle {

namespace {
// Removes "<target>.tmp-PID" files left by processes that died mid-write (kill -9, power loss): they
// are never renamed, and would otherwise stay beside the real file for ever.
void removeStaleTemporaries(const std::filesystem::path& target) {
  std::error_code ec;
  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : ".";
  const std::string prefix = target.filename().string() + ".tmp-";
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (pid == ::getpid() || (pid > 0 && (::kill(pid, 0) == 0 || errno != ESRCH))) continue;  // alive (or not ours to judge)
    std::error_code rm;
    std::filesystem::remove(it->path(), rm);
  }
}
}  // namespace

AtomicFile::AtomicFile(std::filesystem::path target) : m_target(std::move(target)) {
  removeStaleTemporaries(m_target);
  m_temp = m_target;
  m_temp += ".tmp-" + std::to_string(::getpid());
  m_file = std::fopen(m_temp.c_str(), "wb");
  UPCYCLE_CHECK(m_file != nullptr, "cannot create ", m_temp.string(), ": ", std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (m_file) std::fclose(m_file);
  if (!m_committed) {
    std::error_code ec;
    std::filesystem::remove(m_temp, ec);
  }
}

void AtomicFile::write(const void* data, std::size_t bytes) {
  UPCYCLE_ASSERT(m_file != nullptr, "write after commit");
  if (bytes == 0) return;
  size_t n = std::fwrite(data, 1, bytes, m_file);
  UPCYCLE_CHECK(n == bytes, "short write to ", m_temp.string(), ": ", std::strerror(errno));
}

void AtomicFile::commit() {
  UPCYCLE_ASSERT(m_file != nullptr, "double commit");
  bool ok = std::fflush(m_file) == 0 && ::fsync(::fileno(m_file)) == 0;
  ok = (std::fclose(m_file) == 0) && ok;
  m_file = nullptr;
  UPCYCLE_CHECK(ok, "cannot flush ", m_temp.string(), ": ", std::strerror(errno));
  std::error_code ec;
  std::filesystem::rename(m_temp, m_target, ec);
  UPCYCLE_CHECK(!ec, "cannot rename ", m_temp.string(), " to ", m_target.string(), ": ",
                ec.message());
  m_committed = true;
}

void writeFileAtomically(const std::filesystem::path& path, const std::string& content) {
  AtomicFile f(path);
  f.write(content.data(), content.size());
  f.commit();
}

std::string readTextFile(const std::filesystem::path& path) {
  // Only regular files: a FIFO would block the read for ever, a directory reads as nothing.
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  UPCYCLE_CHECK(!std::filesystem::exists(status) || std::filesystem::is_regular_file(status), path.string(),
                " is not a regular file");
  std::ifstream in(path, std::ios::binary);
  UPCYCLE_CHECK(in.good(), "cannot open ", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace upcycle
