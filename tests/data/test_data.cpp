// Tokenizers, instruction data, templates, packing, splitting and the demo data generator.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "data/demo_data.h"
#include "data/instruction_data.h"
#include "data/tokenizer.h"
#include "test_util.h"

using namespace upcycle;
using nlohmann::json;
using upcycle::test::TempDir;

TEST(ByteTokenizer, BytesAreTheirOwnIds) {
  ByteTokenizer t;
  EXPECT_EQ(t.encode("Az\n"), (std::vector<int64_t>{65, 122, 10}));
  EXPECT_EQ(t.encode("é"), (std::vector<int64_t>{0xc3, 0xa9}));  // UTF-8 bytes
  EXPECT_EQ(t.decode({72, 105, ByteTokenizer::kEos, 33}), "Hi!");  // specials skipped
  EXPECT_EQ(*t.bos, 256);
  EXPECT_EQ(*t.eos, 257);
  EXPECT_EQ(t.vocabSize(), 264);
}

TEST(SentencePiece, EncodesAsThePythonLibraryDoes) {
  TempDir dir;
  std::filesystem::copy_file(test::fixtures() / "tokenizer/tokenizer.model", dir / "tokenizer.model");
  json e = json::parse(test::readBytes(test::fixtures() / "tokenizer/expected.json"));
  auto tok = loadTokenizer(dir.path());
  EXPECT_EQ(tok->kind(), "sentencepiece");
  EXPECT_EQ(tok->vocabSize(), e["vocab_size"].get<int64_t>());
  EXPECT_EQ(*tok->bos, e["bos"].get<int64_t>());
  EXPECT_EQ(*tok->eos, e["eos"].get<int64_t>());
  for (const auto& c : e["encodings"]) {
    EXPECT_EQ(tok->encode(c["text"]), c["ids"].get<std::vector<int64_t>>()) << c["text"];
    EXPECT_EQ(tok->decode(c["ids"].get<std::vector<int64_t>>()), c["decoded"].get<std::string>());
  }
}

TEST(SentencePiece, ConfigSpecialIdsWinAndErrorsAreClear) {
  TempDir dir;
  std::filesystem::copy_file(test::fixtures() / "tokenizer/tokenizer.model", dir / "tokenizer.model");
  auto cfg = json::parse(test::readBytes(test::fixtures() / "models/llama_gqa/config.json"));
  cfg["eos_token_id"] = 5;
  test::writeBytes(dir / "config.json", cfg.dump());
  EXPECT_EQ(*loadTokenizer(dir.path())->eos, 5);
  test::writeBytes(dir / "tokenizer.model", "not a model");
  test::expectErrorContaining([&] { loadTokenizer(dir.path()); }, {"tokenizer.model", "not a SentencePiece model"});
  TempDir empty;
  test::expectErrorContaining([&] { loadTokenizer(empty.path()); }, {"no tokenizer"});
}

TEST(PromptTemplate, RendersAlpacaWordForWord) {
  auto t = PromptTemplate::byName("alpaca");
  EXPECT_EQ(t.render("Say hi", ""),
            "Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\nSay hi\n\n### Response:\n");
  EXPECT_NE(t.render("Add", "1+2").find("### Input:\n1+2\n\n### Response:\n"), std::string::npos);
  EXPECT_EQ(PromptTemplate::byName("compact").render("add", "1+2"), "Q: add 1+2\nA: ");
  test::expectErrorContaining([] { PromptTemplate::byName("chatml"); }, {"prompt template \"chatml\""});
}

namespace {
std::vector<Example> readString(const TempDir& dir, const std::string& text) {
  test::writeBytes(dir / "d.jsonl", text);
  return readExamples(dir / "d.jsonl");
}
}  // namespace

TEST(InstructionData, ReadsEveryFormatAndKeepsDomains) {
  TempDir dir;
  auto ex = readString(dir,
                       R"({"instruction":"add","input":"1+2","output":"3","domain":"math"})" "\n"
                       R"({"conversations":[{"from":"system","value":"Be brief."},{"from":"human","value":"hi"},{"from":"gpt","value":"hello"}],"category":"chat"})" "\n"
                       R"({"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"},{"role":"assistant","content":"d"}]})" "\n"
                       R"({"text":"plain corpus"})" "\n"
                       R"({"input_ids":[1,2,3],"labels":[-100,2,3]})" "\n");
  ASSERT_EQ(ex.size(), 5u);
  EXPECT_EQ(ex[0].turns[0].input, "1+2");
  EXPECT_EQ(ex[0].domain, "math");
  EXPECT_EQ(ex[1].turns[0].instruction, "Be brief.\nhi");
  EXPECT_EQ(ex[1].domain, "chat");
  ASSERT_EQ(ex[2].turns.size(), 2u);
  EXPECT_EQ(ex[2].turns[1].response, "d");
  EXPECT_EQ(ex[3].kind, Example::Kind::Text);
  EXPECT_EQ(ex[4].kind, Example::Kind::Tokens);
}

TEST(InstructionData, BadRecordsNameTheLineAndField) {
  TempDir dir;
  test::expectErrorContaining([&] { readString(dir, "{\"instruction\":\"x\"}\n"); }, {"d.jsonl:1", "missing field \"output\""});
  test::expectErrorContaining([&] { readString(dir, "\n{\"foo\":1}\n"); }, {"d.jsonl:2", "unknown record kind"});
  test::expectErrorContaining([&] { readString(dir, "{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"}]}\n"); },
                              {"without a user turn"});
  test::expectErrorContaining([&] { readString(dir, "{\"instruction\": 3, \"output\": \"x\"}\n"); },
                              {"\"instruction\" is not a string"});
}

TEST(Tokenize, LossCoversTheResponseAndEosOnly) {
  TempDir dir;
  auto ex = readString(dir, R"({"instruction":"add","input":"1+2","output":"3","domain":"math"})" "\n");
  ByteTokenizer tok;
  TokenizeOptions o;
  o.promptTemplate = PromptTemplate::byName("compact");
  auto recs = tokenizeExamples(ex, tok, o);
  ASSERT_EQ(recs.size(), 1u);
  const auto& r = recs[0];
  // bos + "Q: add 1+2\nA: " (14 bytes) + "3" + eos
  ASSERT_EQ(r.inputIds.size(), 1u + 14 + 1 + 1);
  EXPECT_EQ(r.inputIds.front(), 256);
  EXPECT_EQ(r.inputIds[15], '3');
  EXPECT_EQ(r.inputIds.back(), 257);
  for (size_t i = 0; i < 15; ++i) EXPECT_EQ(r.labels[i], -100) << i;
  EXPECT_EQ(r.labels[15], '3');
  EXPECT_EQ(r.labels[16], 257);
  EXPECT_EQ(r.promptLength, 15);
  EXPECT_EQ(r.answer, "3");
  EXPECT_EQ(r.domain, "math");
  o.trainOnPrompt = true;
  EXPECT_EQ(tokenizeExamples(ex, tok, o)[0].labels[4], 'a');  // bos Q : space a
}

TEST(Tokenize, TruncationDropsRecordsWithNothingToLearn) {
  TempDir dir;
  auto ex = readString(dir, R"({"instruction":"a long instruction","output":"x"})" "\n" R"({"text":"hello"})" "\n");
  ByteTokenizer tok;
  TokenizeOptions o;
  o.promptTemplate = PromptTemplate::byName("raw");
  o.maxLength = 5;
  int64_t dropped = 0;
  auto recs = tokenizeExamples(ex, tok, o, &dropped);
  EXPECT_EQ(dropped, 1);  // the instruction's response starts past 5 tokens
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].inputIds, (std::vector<int64_t>{256, 'h', 'e', 'l', 'l'}));
}

TEST(Packing, CutsExactBlocksAndKeepsLabels) {
  std::vector<TokenRecord> recs(2);
  recs[0].inputIds = {1, 2, 3};
  recs[0].labels = {-100, 2, 3};
  recs[1].inputIds = {4, 5, 6, 7, 8};
  auto packed = packRecords(recs, 3);
  ASSERT_EQ(packed.size(), 2u);  // 8 tokens -> 2 blocks of 3, tail of 2 dropped
  EXPECT_EQ(packed[0].labels, (std::vector<int64_t>{-100, 2, 3}));
  EXPECT_EQ(packed[1].inputIds, (std::vector<int64_t>{4, 5, 6}));
  EXPECT_EQ(packed[1].labels, (std::vector<int64_t>{4, 5, 6}));
}

TEST(Split, SeededDisjointAndComplete) {
  std::vector<TokenRecord> recs(100);
  for (int i = 0; i < 100; ++i) recs[i].line = i;
  auto [train, val] = splitRecords(recs, 0.1, 3);
  EXPECT_EQ(val.size(), 10u);
  EXPECT_EQ(train.size(), 90u);
  std::set<int64_t> all;
  for (auto& r : train) all.insert(r.line);
  for (auto& r : val) all.insert(r.line);
  EXPECT_EQ(all.size(), 100u);
  auto again = splitRecords(recs, 0.1, 3).second;
  auto other = splitRecords(recs, 0.1, 4).second;
  EXPECT_EQ(again[0].line, val[0].line);
  bool differs = false;
  for (size_t i = 0; i < 10; ++i) differs |= other[i].line != val[i].line;
  EXPECT_TRUE(differs);
}

TEST(DemoData, SevenDomainsWithCorrectAnswers) {
  auto s = generateDemoInstructions(5, 40);
  ASSERT_EQ(s.size(), 7u * 40);
  std::map<std::string, int> yes;
  for (const auto& x : s) {
    // Re-derive each answer from the input by independent means.
    if (x.domain == "arithmetic") {
      int a = std::stoi(x.input), b = std::stoi(x.input.substr(x.input.find('+') + 1));
      EXPECT_EQ(x.output, std::to_string(a + b)) << x.input;
    } else if (x.domain == "sorting") {
      std::string digits;
      for (char c : x.input) if (c != ' ') digits += c;
      std::sort(digits.begin(), digits.end());
      ASSERT_EQ(digits.size(), 5u);
      const std::string expected = {digits[0], ' ', digits[1], ' ', digits[2], ' ', digits[3], ' ', digits[4]};
      EXPECT_EQ(x.output, expected);
    } else if (x.domain == "reversing") {
      EXPECT_EQ(x.output, std::string(x.input.rbegin(), x.input.rend()));
    } else if (x.domain == "counting") {
      EXPECT_EQ(x.output, std::to_string(std::count(x.input.begin(), x.input.end(), 'a')));
    } else if (x.domain == "brackets") {
      int depth = 0;
      bool ok = true;
      for (char c : x.input) { depth += c == '(' ? 1 : -1; ok &= depth >= 0; }
      EXPECT_EQ(x.output, ok && depth == 0 ? "yes" : "no") << x.input;
      yes[x.output]++;
    } else if (x.domain == "cipher") {
      ASSERT_EQ(x.output.size(), x.input.size());
      for (size_t i = 0; i < x.input.size(); ++i) EXPECT_EQ((x.output[i] - 'a' + 26 - 1) % 26, x.input[i] - 'a');
    } else if (x.domain == "facts") {
      // The answer is the table's: look the place up by a linear search of its rows.
      std::string found;
      for (const auto& [place, capital] : demoFacts())
        if (place == x.input) found = capital;
      EXPECT_EQ(x.output, found) << x.input;
      EXPECT_EQ(x.instruction, "capital of");
    } else {
      ADD_FAILURE() << "unknown domain " << x.domain;
    }
  }
  EXPECT_GT(yes["yes"], 5);  // both classes present
  EXPECT_GT(yes["no"], 5);
}

TEST(DemoData, FactsAreOneFixedTableTaughtInFullEverySixtySamples) {
  // 60 distinct places; 60 samples per domain teach each exactly once, whatever the seed; the
  // evaluation draw (another seed) asks about places of the same table; the corpus never states a fact.
  const auto& table = demoFacts();
  ASSERT_EQ(table.size(), 60u);
  std::set<std::string> places;
  for (const auto& [p, c] : table) places.insert(p);
  EXPECT_EQ(places.size(), 60u);
  for (uint64_t seed : {1u, 8u}) {
    std::map<std::string, int> taught;
    for (const auto& x : generateDemoInstructions(seed, 60))
      if (x.domain == "facts") taught[x.input]++;
    EXPECT_EQ(taught.size(), 60u) << "seed " << seed;
    for (const auto& [p, n] : taught) EXPECT_EQ(n, 1) << p;
  }
  std::vector<std::string> first, second;
  for (const auto& x : generateDemoInstructions(1, 5))
    if (x.domain == "facts") first.push_back(x.input);
  for (const auto& x : generateDemoInstructions(2, 5))
    if (x.domain == "facts") second.push_back(x.input);
  EXPECT_NE(first, second) << "the order of teaching follows the seed";
  for (const auto& doc : generateDemoCorpus(3, 200)) EXPECT_EQ(doc.find("capital of"), std::string::npos) << doc;
}

TEST(DemoData, DeterministicFromTheSeed) {
  EXPECT_EQ(demoInstructionsJsonl(generateDemoInstructions(1, 10)), demoInstructionsJsonl(generateDemoInstructions(1, 10)));
  EXPECT_NE(demoInstructionsJsonl(generateDemoInstructions(1, 10)), demoInstructionsJsonl(generateDemoInstructions(2, 10)));
  auto c = generateDemoCorpus(1, 5);
  EXPECT_EQ(c, generateDemoCorpus(1, 5));
  EXPECT_NE(c[0].find(" = "), std::string::npos);
  // The JSONL reads back through the instruction reader.
  TempDir dir;
  test::writeBytes(dir / "d.jsonl", demoInstructionsJsonl(generateDemoInstructions(1, 2)));
  auto ex = readExamples(dir / "d.jsonl");
  EXPECT_EQ(ex.size(), 14u);
  EXPECT_EQ(ex[0].domain, "arithmetic");
}
