#include "cli/args.h"

#include "core/error.h"

namespace upcycle::cli {

Args::Args(int argc, char** argv, int first, const std::set<std::string>& flags) {
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0 && a.size() > 2) {
      std::string key = a.substr(2);
      auto eq = key.find('=');
      if (eq != std::string::npos) {
        m_values[key.substr(0, eq)] = key.substr(eq + 1);
      } else if (flags.count(key)) {
        m_flags.insert(key);
      } else {
        UPCYCLE_CHECK(i + 1 < argc, "option --", key, " needs a value");
        m_values[key] = argv[++i];
      }
    } else {
      m_positional.push_back(a);
    }
  }
}

std::string Args::get(const std::string& key, const std::string& fallback) const {
  auto it = m_values.find(key);
  return it == m_values.end() ? fallback : it->second;
}

std::string Args::require(const std::string& key) const {
  auto it = m_values.find(key);
  UPCYCLE_CHECK(it != m_values.end(), "--", key, " is required");
  return it->second;
}

int64_t Args::getInt(const std::string& key, int64_t fallback) const {
  auto it = m_values.find(key);
  if (it == m_values.end()) return fallback;
  size_t pos = 0;
  int64_t v = 0;
  try {
    v = std::stoll(it->second, &pos);
  } catch (...) {
    pos = 0;
  }
  UPCYCLE_CHECK(pos == it->second.size() && !it->second.empty(), "--", key,
                " must be an integer, got \"", it->second, "\"");
  return v;
}

double Args::getDouble(const std::string& key, double fallback) const {
  auto it = m_values.find(key);
  if (it == m_values.end()) return fallback;
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(it->second, &pos);
  } catch (...) {
    pos = 0;
  }
  UPCYCLE_CHECK(pos == it->second.size() && !it->second.empty(), "--", key,
                " must be a number, got \"", it->second, "\"");
  return v;
}

void Args::allowOnly(const std::set<std::string>& known) const {
  for (const auto& [k, v] : m_values) UPCYCLE_CHECK(known.count(k), "unknown option --", k);
  for (const auto& k : m_flags) UPCYCLE_CHECK(known.count(k), "unknown option --", k);
}

}  // namespace upcycle::cli
