#include "data/demo_data.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

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

// The facts domain: a fixed table of made-up places and their capitals (pronounceable syllables),
// the same for every seed, so that training and evaluation ask about the same world. A seed decides
// the order the facts are taught and which are asked.
constexpr int64_t kFacts = 60;

std::string syllables(Rng& r, int64_t n) {
  static const std::string consonants = "bdfgklmnprstvz", vowels = "aeiou";
  std::string s;
  for (int64_t i = 0; i < n; ++i) {
    s += consonants[pick(r, consonants.size())];
    s += vowels[pick(r, vowels.size())];
  }
  return s;
}

const std::vector<std::pair<std::string, std::string>>& factTable() {
  static const std::vector<std::pair<std::string, std::string>> table = [] {
    Rng r(0xfac75ull);  // fixed: the table is part of the demo's world, not of a seed
    std::vector<std::pair<std::string, std::string>> t;
    std::set<std::string> keys;
    while (static_cast<int64_t>(t.size()) < kFacts) {
      std::string k = syllables(r, 3);
      if (!keys.insert(k).second) continue;
      t.emplace_back(k, syllables(r, 2));
    }
    return t;
  }();
  return table;
}

// One sample of a domain. `nth` counts the samples of the domain so far: the facts domain walks the
// table in the seed's order (`order`), so every fact is taught once per kFacts samples.
DemoSample sample(Rng& r, const std::string& domain, int64_t nth = 0, const std::vector<int64_t>* order = nullptr) {
  DemoSample s;
  s.domain = domain;
  if (domain == "arithmetic") {
    int64_t a = pick(r, 30), b = pick(r, 30);
    s.instruction = "add";
    s.input = std::to_string(a) + "+" + std::to_string(b);
    s.output = std::to_string(a + b);
  } else if (domain == "sorting") {
    std::vector<int64_t> d(5);
    for (auto& x : d) x = pick(r, 10);
    s.instruction = "sort";
    for (size_t i = 0; i < d.size(); ++i) s.input += (i ? " " : "") + std::to_string(d[i]);
    std::sort(d.begin(), d.end());
    for (size_t i = 0; i < d.size(); ++i) s.output += (i ? " " : "") + std::to_string(d[i]);
  } else if (domain == "reversing") {
    s.instruction = "reverse";
    s.input = letters(r, 3 + pick(r, 2), "abcdefgh");
    s.output = std::string(s.input.rbegin(), s.input.rend());
  } else if (domain == "counting") {
    s.instruction = "count a";
    s.input = letters(r, 6 + pick(r, 7), "abc");
    s.output = std::to_string(std::count(s.input.begin(), s.input.end(), 'a'));
  } else if (domain == "brackets") {
    // Half balanced by construction, half with one bracket flipped.
    const int64_t pairs = 3 + pick(r, 4);
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
    s.input = letters(r, 2 + pick(r, 3), "abcdefghijklmnopqrstuvwxyz");
    for (char c : s.input) s.output += static_cast<char>('a' + (c - 'a' + 1) % 26);
  } else if (domain == "facts") {
    const auto& f = factTable()[order ? (*order)[nth % kFacts] : pick(r, kFacts)];
    s.instruction = "capital of";
    s.input = f.first;
    s.output = f.second;
  } else {
    throw InternalError("unknown demo domain " + domain);
  }
  return s;
}

}  // namespace

const std::vector<std::string>& demoDomains() {
  static const std::vector<std::string> d = {"arithmetic", "sorting", "reversing", "counting",
                                             "brackets", "cipher", "facts"};
  return d;
}

const std::vector<std::pair<std::string, std::string>>& demoFacts() { return factTable(); }

std::vector<DemoSample> generateDemoInstructions(uint64_t seed, int64_t perDomain) {
  UPCYCLE_CHECK(perDomain >= 1 && perDomain <= 1000000, "samples per domain must be in [1, 1000000], got ", perDomain);
  Rng r(seed);
  // The order the facts are taught in: a permutation of the table drawn from the seed (Fisher-Yates
  // with the same `rng() % n` draws as everything else here).
  std::vector<int64_t> order(kFacts);
  for (int64_t i = 0; i < kFacts; ++i) order[i] = i;
  for (int64_t i = kFacts - 1; i > 0; --i) std::swap(order[i], order[pick(r, i + 1)]);
  std::vector<DemoSample> out;
  for (int64_t i = 0; i < perDomain; ++i)
    for (const auto& d : demoDomains()) out.push_back(sample(r, d, i, &order));
  return out;
}

std::vector<std::string> generateDemoCorpus(uint64_t seed, int64_t documents) {
  UPCYCLE_CHECK(documents >= 1 && documents <= 10000000, "corpus documents must be in [1, 10000000], got ", documents);
  Rng r(seed ^ 0x5deece66dull);
  // The procedural domains only: the facts are taught by instruction tuning, where the experts'
  // extra parameters can hold them.
  const int64_t procedural = static_cast<int64_t>(demoDomains().size()) - 1;
  std::vector<std::string> docs;
  for (int64_t i = 0; i < documents; ++i) {
    std::string doc;
    const int64_t n = 3 + pick(r, 3);
    for (int64_t k = 0; k < n; ++k) {
      DemoSample s = sample(r, demoDomains()[pick(r, procedural)]);
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
