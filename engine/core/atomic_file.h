#pragma once
// Atomic file writes: data goes to "<path>.tmp-<pid>" and is renamed over <path> only when complete
// and flushed, so a crash never leaves a half-written checkpoint under the real name.
// Thread-safety: one AtomicFile per thread; distinct paths may be written concurrently.
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <string>

namespace upcycle {

class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path target);
  ~AtomicFile();  // removes the temporary file if commit() was not reached
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, std::size_t bytes);
  void commit();  // fsync, close, rename; throws UserError naming the path on failure

  const std::filesystem::path& target() const { return m_target; }

 private:
  std::filesystem::path m_target;
  std::filesystem::path m_temp;
  std::FILE* m_file = nullptr;
  bool m_committed = false;
};

// Writes a whole string atomically.
void writeFileAtomically(const std::filesystem::path& path, const std::string& content);
// Copies a regular file atomically, in 1 MiB pieces; errors name `to` with the system's reason (a full
// disk says "No space left on device", not std::filesystem's generic I/O error).
void copyFileAtomically(const std::filesystem::path& from, const std::filesystem::path& to);
// Reads a whole file, throwing UserError naming the path when it cannot.
std::string readTextFile(const std::filesystem::path& path);

}  // namespace upcycle
