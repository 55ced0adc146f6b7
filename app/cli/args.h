#pragma once
// Minimal command-line parsing for `upcycle VERB [positional...] [--key value | --flag]...`.
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace upcycle::cli {

class Args {
 public:
  // `flags` are options without a value; every other --option takes one value.
  Args(int argc, char** argv, int first, const std::set<std::string>& flags);

  bool has(const std::string& key) const { return m_values.count(key) || m_flags.count(key); }
  std::string get(const std::string& key, const std::string& fallback = "") const;
  std::string require(const std::string& key) const;  // throws UserError "--key is required"
  int64_t getInt(const std::string& key, int64_t fallback) const;
  double getDouble(const std::string& key, double fallback) const;
  const std::vector<std::string>& positional() const { return m_positional; }
  // Throws UserError naming the first option not in `known`.
  void allowOnly(const std::set<std::string>& known) const;

 private:
  std::map<std::string, std::string> m_values;
  std::set<std::string> m_flags;
  std::vector<std::string> m_positional;
};

}  // namespace upcycle::cli
