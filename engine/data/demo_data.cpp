#include "data/demo_data.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"

namespace upcycle {

namespace {

using Rng = std::mt19937_64;
int64_t pick(Rng& r, int64_t n) { return static_cast<int64_t>(r() % static_cast<uint64_t>(n)); }

std::string letters(Rng& r, int64_t n, const std::string& alphabet) {
  std::string s;
  for (int64_t i = 0; i < n; ++i) s += alphabet[pick(r, alphabet.size())];
  return s;
}

DemoSample sample(Rng& r, const std::string& domain) {
  DemoSample s;
  s.domain = domain;
  if (domain == "arithmetic") {
    int64_t a = pick(r, 50), b = pick(r, 50);
    s.instruction = "add";
    s.input = std::to_string(a) + "+" + std::to_string(b);
    s.output = std::to_string(a + b);
  } else if (domain == "sorting") {
    std::vector<int64_t> d(4);
    for (auto& x : d) x = pick(r, 10);
    s.instruction = "sort";
    for (size_t i = 0; i < d.size(); ++i) s.input += (i ? " " : "") + std::to_string(d[i]);
    std::sort(d.begin(), d.end());
    for (size_t i = 0; i < d.size(); ++i) s.output += (i ? " " : "") + std::to_string(d[i]);
  } else if (domain == "reversing") {
    s.instruction = "reverse";
    s.input = letters(r, 3 + pick(r, 4), "abcdefghijklmnopqrstuvwxyz");
    s.output = std::string(s.input.rbegin(), s.input.rend());
  } else if (domain == "counting") {
    s.instruction = "count a";
    s.input = letters(r, 4 + pick(r, 5), "abc");
    s.output = std::to_string(std::count(s.input.begin(), s.input.end(), 'a'));
  } else if (domain == "brackets") {
    // Half balanced by construction, half with one bracket flipped.
    const int64_t pairs = 2 + pick(r, 3);
    std::string b;
    int64_t open = 0, left = pairs;
    while (left > 0 || open > 0) {
      if (left > 0 && (open == 0 || pick(r, 2) == 0)) { b += '('; ++open; --left; }
      else { b += ')'; --open; }
    }
    const bool balanced = pick(r, 2) == 0;
    if (!balanced) {
      const int64_t i = pick(r, b.size());
      b[i] = b[i] == '(' ? ')' : '(';
    }
    s.instruction = "balanced";
    s.input = b;
    s.output = balanced ? "yes" : "no";
  } else if (domain == "cipher") {
    s.instruction = "shift";
    s.input = letters(r, 3 + pick(r, 4), "abcdefghijklmnopqrstuvwxyz");
    for (char c : s.input) s.output += static_cast<char>('a' + (c - 'a' + 1) % 26);
  } else if (domain == "units") {
    struct U { const char* from; const char* to; int64_t factor; };
    static const U units[] = {{"km", "m", 1000}, {"m", "cm", 100}, {"h", "min", 60}, {"min", "s", 60}};
    const U& u = units[pick(r, 4)];
    const int64_t n = 1 + pick(r, 9);
    s.instruction = std::string("convert to ") + u.to;
    s.input = std::to_string(n) + " " + u.from;
    s.output = std::to_string(n * u.factor);
  } else {
    throw InternalError("unknown demo domain " + domain);
  }
  return s;
}

}  // namespace

const std::vector<std::string>& demoDomains() {
  static const std::vector<std::string> d = {"arithmetic", "sorting", "reversing", "counting",
                                             "brackets", "cipher", "units"};
  return d;
}

std::vector<DemoSample> generateDemoInstructions(uint64_t seed, int64_t perDomain) {
  UPCYCLE_CHECK(perDomain >= 1 && perDomain <= 1000000, "samples per domain must be in [1, 1000000], got ", perDomain);
  Rng r(seed);
  std::vector<DemoSample> out;
  for (int64_t i = 0; i < perDomain; ++i)
    for (const auto& d : demoDomains()) out.push_back(sample(r, d));
  return out;
}

std::vector<std::string> generateDemoCorpus(uint64_t seed, int64_t documents) {
  UPCYCLE_CHECK(documents >= 1 && documents <= 10000000, "corpus documents must be in [1, 10000000], got ", documents);
  Rng r(seed ^ 0x5deece66dull);
  std::vector<std::string> docs;
  for (int64_t i = 0; i < documents; ++i) {
    std::string doc;
    const int64_t n = 3 + pick(r, 3);
    for (int64_t k = 0; k < n; ++k) {
      DemoSample s = sample(r, demoDomains()[pick(r, demoDomains().size())]);
      doc += (k ? "; " : "") + s.instruction + " " + s.input + " = " + s.output;
    }
    docs.push_back(doc);
  }
  return docs;
}

std::string demoInstructionsJsonl(const std::vector<DemoSample>& samples) {
  std::string out;
  for (const auto& s : samples)
    out += nlohmann::json{{"instruction", s.instruction}, {"input", s.input}, {"output", s.output},
                          {"domain", s.domain}}.dump() + "\n";
  return out;
}

std::string demoCorpusJsonl(const std::vector<std::string>& docs) {
  std::string out;
  for (const auto& d : docs) out += nlohmann::json{{"text", d}}.dump() + "\n";
  return out;
}

}  // namespace upcycle
