#pragma once
// The built-in multi-domain data for the demo: instruction data whose answers are exact, and a plain
// text corpus from the same domains for pretraining a tiny base. Deterministic from the seed (a
// std::mt19937_64; draws use `rng() % n`, which the standard fixes, unlike the distributions).
// Torch-free. Thread-safety: free functions.
#include <cstdint>
#include <string>
#include <vector>

namespace upcycle {

struct DemoSample {
  std::string domain, instruction, input, output;
};

// arithmetic, sorting, reversing, counting, brackets, cipher (procedural: answers computed from the
// input) and facts (recall: "capital of" one of 60 made-up places, a table fixed for every seed;
// taught in a seed-drawn order so that 200 samples of the domain teach every fact once, and absent
// from the pretraining corpus). docs/RESULTS.md says why the demo is designed this way.
const std::vector<std::string>& demoDomains();
// The facts domain's table: (place, capital).
const std::vector<std::pair<std::string, std::string>>& demoFacts();

// `perDomain` samples of every domain, interleaved (domain order repeats).
std::vector<DemoSample> generateDemoInstructions(uint64_t seed, int64_t perDomain);
// `documents` plain-text lines, each holding several solved problems of mixed domains.
std::vector<std::string> generateDemoCorpus(uint64_t seed, int64_t documents);

// JSONL writers: {"instruction","input","output","domain"} and {"text"} per line.
std::string demoInstructionsJsonl(const std::vector<DemoSample>& samples);
std::string demoCorpusJsonl(const std::vector<std::string>& docs);

}  // namespace upcycle
