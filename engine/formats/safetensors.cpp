#include "formats/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"

namespace upcycle {

using nlohmann::json;

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::size_t TensorWrite::nbytes() const {
  std::size_t n = dtypeSize(dtype);
  for (int64_t d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

namespace {

// Parses the header JSON and rejects duplicate top-level names, which nlohmann would silently merge.
json parseHeader(const char* begin, std::size_t size, const std::string& where) {
  std::set<std::string> seen;
  std::string duplicate;
  auto cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key) {
      std::string key = parsed.get<std::string>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(begin, begin + size, cb);
  } catch (const json::exception& e) {
    throw UserError(where + ": header is not valid JSON (" + e.what() + ")");
  }
  UPCYCLE_CHECK(duplicate.empty(), where, ": duplicate tensor name \"", duplicate, "\" in header");
  UPCYCLE_CHECK(header.is_object(), where, ": header is not a JSON object");
  return header;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : m_path(path) {
  const std::string where = path.string();
  // O_NONBLOCK: opening a FIFO named as a shard would otherwise wait for a writer for ever.
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK);
  UPCYCLE_CHECK(fd >= 0, "cannot open ", where, ": ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw UserError("cannot stat " + where);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw UserError(where + " is not a regular file");
  }
  m_size = static_cast<uint64_t>(st.st_size);
  if (m_size < 8) {
    ::close(fd);
    throw UserError(where + ": truncated safetensors file (" + std::to_string(m_size) +
                    " bytes, less than the 8-byte header length)");
  }
  m_map = ::mmap(nullptr, m_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m_map == MAP_FAILED) {
    m_map = nullptr;
    throw UserError("cannot map " + where + ": " + std::strerror(errno));
  }
  try {
    const auto* bytes = static_cast<const unsigned char*>(m_map);
    uint64_t headerLen = 0;
    for (int i = 7; i >= 0; --i) headerLen = (headerLen << 8) | bytes[i];  // little-endian u64
    UPCYCLE_CHECK(headerLen <= kMaxHeaderBytes, where, ": header length ", headerLen,
                  " exceeds the limit of ", kMaxHeaderBytes, " bytes");
    UPCYCLE_CHECK(headerLen <= m_size - 8, where, ": header length ", headerLen,
                  " runs past the end of the file (", m_size, " bytes)");
    UPCYCLE_CHECK(headerLen >= 2 && bytes[8] == '{', where,
                  ": header does not start with '{' (not a safetensors file?)");
    json header = parseHeader(reinterpret_cast<const char*>(bytes + 8), headerLen, where);

    const uint64_t bufferStart = 8 + headerLen;
    const uint64_t bufferSize = m_size - bufferStart;
    struct Range { uint64_t begin, end; std::size_t idx; };
    std::vector<Range> ranges;
    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const std::string ctx = where + ": tensor \"" + name + "\"";
      if (name == "__metadata__") {
        UPCYCLE_CHECK(it->is_object(), where, ": __metadata__ is not an object");
        for (auto m = it->begin(); m != it->end(); ++m) {
          UPCYCLE_CHECK(m->is_string(), where, ": __metadata__ value for \"", m.key(),
                        "\" is not a string");
          m_metadata[m.key()] = m->get<std::string>();
        }
        continue;
      }
      const json& e = *it;
      UPCYCLE_CHECK(e.is_object() && e.contains("dtype") && e.contains("shape") &&
                        e.contains("data_offsets"),
                    ctx, ": entry needs dtype, shape and data_offsets");
      UPCYCLE_CHECK(e["dtype"].is_string(), ctx, ": dtype is not a string");
      TensorView v;
      v.name = name;
      v.dtype = parseDType(e["dtype"].get<std::string>(), ctx);
      UPCYCLE_CHECK(e["shape"].is_array(), ctx, ": shape is not an array");
      uint64_t numel = 1;
      for (const json& d : e["shape"]) {
        UPCYCLE_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
                      ctx, ": shape entry ", d.dump(), " is not a non-negative integer");
        uint64_t dim = d.get<uint64_t>();
        UPCYCLE_CHECK(dim == 0 || numel <= (uint64_t(1) << 62) / dim, ctx, ": shape overflows");
        numel *= dim;
        v.shape.push_back(static_cast<int64_t>(dim));
      }
      const json& off = e["data_offsets"];
      UPCYCLE_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                        off[1].is_number_unsigned(),
                    ctx, ": data_offsets must be two non-negative integers");
      uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
      UPCYCLE_CHECK(b <= en, ctx, ": data_offsets [", b, ", ", en, "] are reversed");
      UPCYCLE_CHECK(en <= bufferSize, ctx, ": data_offsets [", b, ", ", en,
                    "] run past the end of the data buffer (", bufferSize, " bytes)");
      // numel may be up to 2^62: the byte count must not wrap (2^62 F32 values are 2^64 bytes, "0").
      UPCYCLE_CHECK(numel <= std::numeric_limits<uint64_t>::max() / dtypeSize(v.dtype), ctx, ": shape ",
                    e["shape"].dump(), " of ", dtypeName(v.dtype), " overflows a 64-bit byte count");
      uint64_t expected = numel * dtypeSize(v.dtype);
      UPCYCLE_CHECK(en - b == expected, ctx, ": byte size ", en - b, " does not match shape and dtype ",
                    dtypeName(v.dtype), " (expected ", expected, " bytes)");
      v.data = bytes + bufferStart + b;
      v.nbytes = en - b;
      ranges.push_back({b, en, m_tensors.size()});
      m_tensors.push_back(std::move(v));
    }
    // No overlaps and no holes: sorted by begin, each tensor starts where the previous ended.
    std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& c) {
      return a.begin != c.begin ? a.begin < c.begin : a.end < c.end;
    });
    uint64_t cursor = 0;
    for (const Range& r : ranges) {
      UPCYCLE_CHECK(r.begin >= cursor, where, ": tensor \"", m_tensors[r.idx].name,
                    "\" overlaps the previous tensor at byte ", r.begin);
      UPCYCLE_CHECK(r.begin == cursor, where, ": gap in the data buffer before tensor \"",
                    m_tensors[r.idx].name, "\" (bytes ", cursor, "..", r.begin, ")");
      cursor = r.end;
    }
    UPCYCLE_CHECK(cursor == bufferSize, where, ": data buffer has ", bufferSize - cursor,
                  " trailing bytes not covered by any tensor");
    // File order = order of offsets.
    std::vector<TensorView> ordered;
    ordered.reserve(m_tensors.size());
    for (const Range& r : ranges) ordered.push_back(std::move(m_tensors[r.idx]));
    m_tensors = std::move(ordered);
    for (std::size_t i = 0; i < m_tensors.size(); ++i) m_index[m_tensors[i].name] = i;
  } catch (...) {
    ::munmap(m_map, m_size);
    m_map = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (m_map) ::munmap(m_map, m_size);
}

const TensorView& SafetensorsFile::tensor(const std::string& name) const {
  auto it = m_index.find(name);
  UPCYCLE_CHECK(it != m_index.end(), m_path.string(), ": missing tensor \"", name, "\"");
  return m_tensors[it->second];
}

void SafetensorsFile::release(const TensorView& t) const {
  if (!m_map || t.nbytes == 0) return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(t.data), end = begin + t.nbytes;
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

void writeSafetensors(const std::filesystem::path& path, const std::vector<TensorWrite>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorWrite& t : tensors) {
    UPCYCLE_CHECK(!header.contains(t.name) && t.name != "__metadata__", path.string(),
                  ": duplicate tensor name \"", t.name, "\"");
    uint64_t n = t.nbytes();
    header[t.name] = {{"dtype", dtypeName(t.dtype)}, {"shape", t.shape},
                      {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);

  AtomicFile out(path);
  out.write(len, 8);
  out.write(text.data(), text.size());
  for (const TensorWrite& t : tensors) {
    const void* bytes = t.data ? t.data : (t.source ? t.source() : nullptr);
    UPCYCLE_ASSERT(bytes || t.nbytes() == 0, "tensor ", t.name, " has neither data nor a source");
    out.write(bytes, t.nbytes());
  }
  out.commit();
}

}  // namespace upcycle
