// tokenizer.json against the Hugging Face tokenizers library itself: the expected ids and decoded
// strings in fixtures/hf_tokenizers/cases.json were made by its Node bindings
// (tests/reference/make_hf_tokenizer_fixtures.js) from real tokenizer files (Qwen3, Llama 3,
// Mistral 7B, Gemma 3), variants of them with other normalizers, pre-tokenizers, decoders and
// added-token flags, and small synthetic BPE models.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/hf_tokenizer.h"
#include "data/instruction_data.h"
#include "data/tokenizer.h"
#include "test_util.h"

using namespace upcycle;
using nlohmann::json;
using upcycle::test::TempDir;

namespace {

const json& cases() {
  static const json c = json::parse(test::readBytes(test::fixtures() / "hf_tokenizers/cases.json"));
  return c;
}

std::string tokenizerText(const json& variant) {
  if (!variant["json"].is_null()) return variant["json"].dump();
  const std::string base = variant["base"];
  std::string text = test::readBytes(test::hfTokenizers() / base / "tokenizer.json");
  if (variant["override"].is_null()) return text;
  json j = json::parse(text);
  for (const auto& [key, value] : variant["override"].items()) j[key] = value;
  return j.dump();
}

void checkVariant(const std::string& name) {
  const json& v = cases()["variants"][name];
  ASSERT_FALSE(v.is_null()) << name;
  auto tok = parseHfTokenizer(tokenizerText(v), name);
  int checked = 0;
  for (const json& c : v["cases"]) {
    const std::string text = c["text"];
    const auto ids = c["ids"].get<std::vector<int64_t>>();
    const auto idsSpecial = c["ids_special"].get<std::vector<int64_t>>();
    EXPECT_EQ(tok->encode(text), ids) << name << ": " << text.substr(0, 80);
    EXPECT_EQ(tok->encodeWithSpecialTokens(text), idsSpecial) << name << ": " << text.substr(0, 80);
    EXPECT_EQ(tok->decode(ids, false), c["decoded"].get<std::string>()) << name << ": " << text.substr(0, 80);
    EXPECT_EQ(tok->decode(idsSpecial, true), c["decoded_skip"].get<std::string>()) << name << ": " << text.substr(0, 80);
    ++checked;
  }
  EXPECT_GE(checked, 40) << name;
}

}  // namespace

TEST(HfTokenizer, Qwen3MatchesTheLibrary) { checkVariant("qwen3"); }
TEST(HfTokenizer, Llama3MatchesTheLibrary) { checkVariant("llama3"); }  // ignore_merges
TEST(HfTokenizer, MistralMatchesTheLibrary) { checkVariant("mistral"); }  // byte_fallback, Prepend
TEST(HfTokenizer, Gemma3MatchesTheLibrary) { checkVariant("gemma3"); }  // whole text one word
TEST(HfTokenizer, MetaspaceVariantsMatchTheLibrary) {
  checkVariant("mistral_metaspace_first");
  checkVariant("mistral_metaspace_always_split");
}
TEST(HfTokenizer, DigitsPunctuationAndAccentsMatchTheLibrary) { checkVariant("mistral_digits_punct"); }
TEST(HfTokenizer, SplitBehavioursMatchTheLibrary) {
  checkVariant("qwen3_split_behaviors_prev");
  checkVariant("qwen3_split_behaviors_next");
  checkVariant("qwen3_split_removed_invert");
  checkVariant("qwen3_whitespace_lower");
}
TEST(HfTokenizer, AddedTokenFlagsMatchTheLibrary) { checkVariant("qwen3_added_flags"); }
TEST(HfTokenizer, SubwordPrefixSuffixUnkAndPairMergesMatchTheLibrary) {
  checkVariant("tiny_prefix_suffix");
  checkVariant("tiny_pairs_fuse_unk");
}

TEST(HfTokenizer, FolderGivesSpecialIdsFromTheFiles) {
  // Qwen3: no BOS (its post-processor adds nothing); EOS from tokenizer_config.json.
  auto qwen = loadTokenizer(test::hfTokenizers() / "qwen3");
  EXPECT_EQ(qwen->kind(), "tokenizer.json (BPE)");
  EXPECT_FALSE(qwen->bos.has_value());
  EXPECT_EQ(qwen->eos, 151645);  // <|im_end|>
  EXPECT_EQ(qwen->tokenId("<|im_start|>"), 151644);
  EXPECT_EQ(qwen->vocabSize(), 151669);
  // Mistral: BOS <s> from its TemplateProcessing post-processor; EOS </s>.
  auto mistral = loadTokenizer(test::hfTokenizers() / "mistral");
  EXPECT_EQ(mistral->bos, 1);
  EXPECT_EQ(mistral->eos, 2);
  // This Llama 3 file's post-processor is ByteLevel alone, so the library adds no BOS either
  // (its chat template writes <|begin_of_text|> itself).
  auto llama = loadTokenizer(test::hfTokenizers() / "llama3");
  EXPECT_FALSE(llama->bos.has_value());
  EXPECT_EQ(llama->eos, 128001);  // tokenizer_config.json: <|end_of_text|>
  // Loaded once per process: the same object comes back.
  EXPECT_EQ(loadTokenizer(test::hfTokenizers() / "qwen3").get(), qwen.get());
  EXPECT_NE(describeTokenizer(test::hfTokenizers() / "qwen3").find("151,669 tokens"), std::string::npos);
}

TEST(HfTokenizer, LongSingleWordIsNotQuadratic) {
  // Gemma 3 has no effective pre-tokenizer split: a whole text is one BPE word. 200 KB of it
  // would take hours with a quadratic merge loop; the decoded ids must give the text back.
  auto tok = loadTokenizer(test::hfTokenizers() / "gemma3");
  std::string text;
  for (int i = 0; text.size() < 200'000; ++i) text += "word" + std::to_string(i % 97) + " ünïcödé 字 ";
  const auto ids = tok->encode(text);
  EXPECT_GT(ids.size(), 20'000u);
  EXPECT_EQ(tok->decode(ids, false), text);
}

TEST(HfTokenizer, InvalidUtf8IsReadAsReplacementCharacters) {
  auto tok = loadTokenizer(test::hfTokenizers() / "qwen3");
  // Python would not even hold these bytes in a str; U+FFFD is what a lossy reader gives.
  EXPECT_EQ(tok->encode("a\xff" "b"), tok->encode("a\xEF\xBF\xBD" "b"));
}

TEST(HfTokenizer, BadFilesGetOneClearError) {
  const std::string tiny = cases()["variants"]["tiny_pairs_fuse_unk"]["json"].dump();
  auto mutate = [&](const std::function<void(json&)>& f) {
    json j = json::parse(tiny);
    f(j);
    return j.dump();
  };
  auto expectError = [](const std::string& text, std::initializer_list<std::string> needles) {
    test::expectErrorContaining([&] { parseHfTokenizer(text, "DIR/tokenizer.json"); }, needles);
  };
  expectError(tiny.substr(0, tiny.size() / 2), {"DIR/tokenizer.json", "not valid JSON"});
  expectError("[1, 2]", {"DIR/tokenizer.json", "not a JSON object"});
  expectError(mutate([](json& j) { j.erase("model"); }), {"DIR/tokenizer.json", "missing \"model\""});
  expectError(mutate([](json& j) { j["model"]["type"] = "Unigram"; }),
              {"DIR/tokenizer.json", "model.type", "Unigram", "only BPE"});
  expectError(mutate([](json& j) { j["model"]["type"] = "WordPiece"; }), {"model.type", "WordPiece"});
  expectError(mutate([](json& j) { j["normalizer"] = {{"type", "Precompiled"}}; }),
              {"DIR/tokenizer.json", "normalizer.type", "Precompiled", "not supported"});
  expectError(mutate([](json& j) { j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Bert"}}}}}; }),
              {"pre_tokenizer.pretokenizers[0].type", "Bert"});
  expectError(mutate([](json& j) { j["decoder"] = {{"type", "WordPiece"}}; }), {"decoder.type", "WordPiece"});
  expectError(mutate([](json& j) { j["post_processor"] = {{"type", "Nope"}}; }), {"post_processor.type", "Nope"});
  expectError(mutate([](json& j) { j["model"]["vocab"]["zz"] = 4000000000LL; }),
              {"DIR/tokenizer.json", "model.vocab[\"zz\"]", "out of range"});
  expectError(mutate([](json& j) { j["model"]["vocab"]["zz"] = -1; }), {"model.vocab[\"zz\"]", "out of range"});
  expectError(mutate([](json& j) { j["model"]["vocab"]["zz"] = "seven"; }), {"model.vocab[\"zz\"]", "not an integer"});
  expectError(mutate([](json& j) { j["added_tokens"][0]["id"] = 1 << 30; }), {"added_tokens[0].id", "out of range"});
  expectError(mutate([](json& j) { j["model"]["merges"].push_back({"q", "nosuchtoken"}); }),
              {"DIR/tokenizer.json", "model.merges[", "not in the vocabulary", "nosuchtoken"});
  expectError(mutate([](json& j) { j["model"]["merges"].push_back("nospace"); }), {"model.merges[", "two tokens"});
  expectError(mutate([](json& j) { j["model"]["unk_token"] = "<nope>"; }), {"model.unk_token", "<nope>"});
  expectError(mutate([](json& j) {
                j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
              }),
              {"DIR/tokenizer.json", "pre_tokenizer.pattern", "(unclosed", "does not compile"});
  expectError(mutate([](json& j) {
                j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Sideways"}};
              }),
              {"pre_tokenizer.behavior", "Sideways"});
  expectError(mutate([](json& j) { j["model"]["dropout"] = 0.1; }), {"model.dropout"});

  // Through a folder: the error names the file.
  TempDir dir;
  test::writeBytes(dir / "tokenizer.json", tiny.substr(0, 100));
  test::expectErrorContaining([&] { loadTokenizer(dir.path()); }, {(dir / "tokenizer.json").string(), "not valid JSON"});
  test::writeBytes(dir / "tokenizer.json", tiny);
  test::writeBytes(dir / "tokenizer_config.json", R"({"eos_token": "<|nope|>"})");
  test::expectErrorContaining([&] { loadTokenizer(dir.path()); },
                              {"tokenizer_config.json", "eos_token", "<|nope|>", "not a token"});
}

TEST(HfTokenizer, PathologicalRegexFailsInsteadOfHanging) {
  const std::string tiny = cases()["variants"]["tiny_pairs_fuse_unk"]["json"].dump();
  json j = json::parse(tiny);
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(a+)+$"}}}, {"behavior", "Isolated"}};
  auto tok = parseHfTokenizer(j.dump(), "DIR/tokenizer.json");
  test::expectErrorContaining([&] { tok->encode(std::string(5000, 'a') + "!"); }, {"(a+)+$", "failed"});
}

TEST(HfTokenizer, ChatRecordsTrainOnTheAssistantTurnsOnly) {
  // The conversation of chat_cases.json's second Qwen3 line, whose text jinja2 rendered and whose
  // ids the Rust library encoded (tests/reference/make_chat_tokenize_fixtures.py).
  const auto cases = json::parse(test::readBytes(test::fixtures() / "hf_tokenizers/chat_cases.json"));
  json row;
  for (const auto& c : cases)
    if (c["model"] == "qwen3" && c["line"]["messages"].size() == 5) row = c;
  ASSERT_FALSE(row.is_null());
  TempDir dir;
  test::writeBytes(dir / "chat.jsonl", json{{"messages", row["line"]["messages"]}}.dump() + "\n");
  auto tok = loadTokenizer(test::hfTokenizers() / "qwen3");
  TokenizeOptions o;
  o.chat = ChatFormat::fromFolder(test::hfTokenizers() / "qwen3");
  ASSERT_TRUE(o.chat);
  const auto records = tokenizeExamples(readExamples(dir / "chat.jsonl"), *tok, o);
  ASSERT_EQ(records.size(), 1u);
  const TokenRecord& r = records[0];
  EXPECT_EQ(r.inputIds, row["ids"].get<std::vector<int64_t>>());  // no BOS: the template has none
  // The trained runs are exactly the assistant contents with their closing <|im_end|>.
  std::vector<std::string> runs;
  for (size_t i = 0; i < r.labels.size(); ++i) {
    if (r.labels[i] == -100) continue;
    std::vector<int64_t> run;
    while (i < r.labels.size() && r.labels[i] != -100) run.push_back(r.labels[i++]);
    runs.push_back(tok->decode(run, false));
  }
  EXPECT_EQ(runs, (std::vector<std::string>{"Hello.<|im_end|>", "Goodbye.<|im_end|>"}));
  // For exact-match accuracy: the prompt stops right before the last answer.
  EXPECT_EQ(tok->decode(std::vector<int64_t>(r.inputIds.begin() + r.promptLength, r.inputIds.end()), false),
            "Goodbye.<|im_end|>\n");
  EXPECT_EQ(r.answer, "Goodbye.");
}

TEST(HfTokenizer, InstructionFormatPrefersTheChatTemplate) {
  TempDir dir;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    std::filesystem::copy_file(test::hfTokenizers() / "qwen3" / f, dir / f);
  EXPECT_EQ(resolveInstructionFormat(dir.path(), "").name, "chat");
  EXPECT_EQ(resolveInstructionFormat(dir.path(), "alpaca").name, "alpaca");
  EXPECT_FALSE(resolveInstructionFormat(dir.path(), "alpaca").chat);
  // Alpaca records become one user turn.
  test::writeBytes(dir / "a.jsonl", R"({"instruction": "Add", "input": "1+2", "output": "3"})" "\n");
  auto tok = loadTokenizer(dir.path());
  TokenizeOptions o;
  o.chat = resolveInstructionFormat(dir.path(), "chat").chat;
  const auto r = tokenizeExamples(readExamples(dir / "a.jsonl"), *tok, o)[0];
  EXPECT_EQ(tok->decode(r.inputIds, false),
            "<|im_start|>user\nAdd\n\n1+2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n3<|im_end|>\n");
  // Without a template, "chat" is refused naming the folder.
  std::filesystem::remove(dir / "tokenizer_config.json");
  test::expectErrorContaining([&] { resolveInstructionFormat(dir.path(), "chat"); },
                              {dir.path().string(), "no \"chat_template\""});
  EXPECT_EQ(resolveInstructionFormat(dir.path(), "").name, "alpaca");
}
