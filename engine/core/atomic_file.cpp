#include "core/atomic_file.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>
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
  UPCYCLE_CHECK(m_file != nullptr, "cannot write ", m_target.string(), ": cannot create ", m_temp.filename().string(), ": ",
                std::strerror(errno));
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
  // Disk full (ENOSPC), a file-size limit (EFBIG), an I/O error: the temporary is removed by the
  // destructor, and nothing appears under the final name.
  UPCYCLE_CHECK(n == bytes, "cannot write ", m_target.string(), ": ", std::strerror(errno));
}

void AtomicFile::commit() {
  UPCYCLE_ASSERT(m_file != nullptr, "double commit");
  bool ok = std::fflush(m_file) == 0 && ::fsync(::fileno(m_file)) == 0;
  ok = (std::fclose(m_file) == 0) && ok;
  m_file = nullptr;
  UPCYCLE_CHECK(ok, "cannot write ", m_target.string(), ": ", std::strerror(errno));
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

void copyFileAtomically(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::FILE* in = std::fopen(from.c_str(), "rb");
  UPCYCLE_CHECK(in != nullptr, "cannot read ", from.string(), ": ", std::strerror(errno));
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> guard(in, std::fclose);
  AtomicFile out(to);
  std::vector<char> buf(1 << 20);
  for (;;) {
    const size_t n = std::fread(buf.data(), 1, buf.size(), in);
    if (n) out.write(buf.data(), n);
    if (n < buf.size()) {
      UPCYCLE_CHECK(!std::ferror(in), "cannot read ", from.string(), ": ", std::strerror(errno));
      break;
    }
  }
  out.commit();
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
