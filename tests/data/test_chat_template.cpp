// Chat templates against Python's jinja2. Every case of tests/fixtures/chat_templates/cases.json
// (tests/reference/make_chat_template_fixtures.py, which sets jinja2 up as transformers does)
// must render byte for byte as Python rendered it, or fail where Python failed. The other tests
// cover what Python cannot be asked about: refused constructs, limits, file discovery, threads.
#include <gtest/gtest.h>

#include <ctime>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "data/chat_template.h"
#include "test_util.h"

namespace upcycle {
namespace {

using nlohmann::ordered_json;

std::filesystem::path templatesDir() { return test::fixtures() / "chat_templates"; }

ordered_json loadCases() {
  return ordered_json::parse(test::readBytes(templatesDir() / "cases.json"));
}

// Where two renders first differ, with some context, for a readable failure.
std::string firstDifference(const std::string& want, const std::string& got) {
  std::size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  const std::size_t from = i > 40 ? i - 40 : 0;
  return "first difference at byte " + std::to_string(i) +
         "\n  python: " + ordered_json(want.substr(from, 120)).dump() +
         "\n  c++:    " + ordered_json(got.substr(from, 120)).dump();
}

TEST(ChatTemplate, MatchesPythonJinja2OnEveryFixtureCase) {
  const ordered_json doc = loadCases();
  const auto& cases = doc.at("cases");
  ASSERT_GE(cases.size(), 200u) << "cases.json looks truncated";

  std::map<std::string, ChatTemplateFile> models;
  int passed = 0, renders = 0, errors = 0;
  for (const auto& c : cases) {
    const std::string name = c.at("name").get<std::string>();
    SCOPED_TRACE(name);
    std::string text, source;
    if (c.contains("model")) {
      const std::string model = c.at("model").get<std::string>();
      if (!models.count(model)) {
        auto file = findChatTemplate(templatesDir() / model);
        ASSERT_TRUE(file.has_value()) << model;
        models.emplace(model, *file);
      }
      const ChatTemplateFile& file = models.at(model);
      text = file.text, source = file.source;
      // The special tokens findChatTemplate reads are the ones Python rendered with.
      const auto& ctx = c.at("context");
      EXPECT_EQ(file.bosToken, ctx.value("bos_token", std::string()));
      EXPECT_EQ(file.eosToken, ctx.value("eos_token", std::string()));
    } else {
      text = c.at("template").get<std::string>();
      source = "synthetic:" + name;
    }
    ordered_json context = c.contains("context") ? c.at("context") : doc.at("shared_context");
    if (c.contains("extra")) context.update(c.at("extra"));

    const bool wantError = c.contains("error");
    const std::string phase = c.value("error_phase", std::string());
    std::optional<ChatTemplate> tmpl;
    try {
      tmpl.emplace(text, source);
    } catch (const UserError& e) {
      const std::string msg = e.what();
      if (wantError && phase == "parse") {
        EXPECT_NE(msg.find(source), std::string::npos) << msg;
        EXPECT_NE(msg.find("line "), std::string::npos) << msg;
        ++passed, ++errors;
      } else {
        ADD_FAILURE() << "refused at parse time: " << msg
                      << "\npython: " << c.value("error", std::string("rendered fine"));
      }
      continue;
    }
    if (wantError && phase == "parse") {
      ADD_FAILURE() << "parsed, but Python refuses it: " << c.at("error").get<std::string>();
      continue;
    }
    try {
      const std::string got = tmpl->renderOrdered(context);
      if (wantError) {
        ADD_FAILURE() << "rendered, but Python fails with " << c.at("error").get<std::string>()
                      << "\ngot: " << ordered_json(got).dump();
        continue;
      }
      const std::string want = c.at("expected").get<std::string>();
      if (got == want) {
        ++passed, ++renders;
      } else {
        ADD_FAILURE() << firstDifference(want, got);
      }
    } catch (const UserError& e) {
      const std::string msg = e.what();
      if (!wantError) {
        ADD_FAILURE() << "failed, but Python renders it: " << msg;
        continue;
      }
      EXPECT_NE(msg.find(source), std::string::npos) << msg;
      if (c.contains("raised")) {  // raise_exception: the template's own message comes through
        EXPECT_NE(msg.find(c.at("raised").get<std::string>()), std::string::npos) << msg;
      }
      ++passed, ++errors;
    }
  }
  EXPECT_EQ(passed, static_cast<int>(cases.size()));
  std::cout << "[ chat templates ] " << passed << " of " << cases.size()
            << " cases match Python's jinja2 " << doc.at("jinja2_version").get<std::string>()
            << " (" << renders << " renders, " << errors << " errors)\n";
}

TEST(ChatTemplate, RaiseExceptionNamesSourceLineAndMessage) {
  auto file = findChatTemplate(templatesDir() / "mistral");
  ASSERT_TRUE(file.has_value());
  ChatTemplate tmpl(file->text, file->source);
  const ordered_json ctx = ordered_json::parse(
      R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
          "bos_token": "<s>", "eos_token": "</s>"})");
  test::expectErrorContaining([&] { tmpl.renderOrdered(ctx); },
                              {"mistral", "tokenizer_config.json: chat_template", "line 1",
                               "Conversation roles must alternate user/assistant"});
}

// One UserError naming the source and the line; no crash, no hang.
void expectSyntaxError(const std::string& text, int line) {
  SCOPED_TRACE(text);
  test::expectErrorContaining([&] { ChatTemplate(text, "my/template.jinja"); },
                              {"my/template.jinja", "line " + std::to_string(line)});
}

TEST(ChatTemplate, SyntaxErrorsNameSourceAndLine) {
  expectSyntaxError("a\nb\n{% if x %}never closed", 3);
  expectSyntaxError("a\n{% for m in messages %}\n{{ m }}\n", 2);
  expectSyntaxError("line one\n{% frobnicate %}", 2);
  expectSyntaxError("{% if a %}\n{% endfor %}\n{% endif %}", 2);
  expectSyntaxError("\n\n\n{{ 1 + }}", 4);
  expectSyntaxError("{{ a.\n}}", 2);
  expectSyntaxError("x\n{{ a", 2);
  expectSyntaxError("{# never closed", 1);
  expectSyntaxError("{{ (a }}", 1);
  expectSyntaxError("{{ 'abc }}", 1);
  expectSyntaxError("{{ a | no_such_filter }}", 1);
  expectSyntaxError("{% if a is no_such_test %}{% endif %}", 1);
  expectSyntaxError("{% break %}", 1);
  expectSyntaxError("{{ '\\x4' }}", 1);
  expectSyntaxError("{% raw %} never closed", 1);
  test::expectErrorContaining([] { ChatTemplate("bad \xff utf-8", "src"); }, {"src", "UTF-8"});
}

// What jinja2 accepts but this interpreter refuses, by name, instead of rendering differently.
TEST(ChatTemplate, UnsupportedConstructsAreRefusedByName) {
  const std::vector<std::pair<std::string, std::string>> atParse = {
      {"{% call m() %}x{% endcall %}", "{% call %}"},
      {"{% include 'other.jinja' %}", "{% include %}"},
      {"{% extends 'base' %}", "{% extends %}"},
      {"{% import 'm' as m %}", "{% import %}"},
      {"{% block b %}{% endblock %}", "{% block %}"},
      {"{% for x in y recursive %}{% endfor %}", "recursive"},
      {"{% macro m() %}{{ varargs }}{% endmacro %}", "varargs"},
      {"{{ f(*args) }}", "*args"},
      {"{{ x[1, 2] }}", "several keys"},
      {"{{ 99999999999999999999 }}", "64 bits"},
      {"{{ x.\u00e9t\u00e9 }}", "non-ASCII identifiers"},
      {"{{ x | format(1) }}", "'format' filter"},
      {"{{ x | wordwrap }}", "'wordwrap' filter"},
      {"{% if x is filter %}{% endif %}", "'filter' test"},
  };
  for (const auto& [text, what] : atParse) {
    SCOPED_TRACE(text);
    test::expectErrorContaining([&] { ChatTemplate(text, "src.jinja"); },
                                {"src.jinja", "line 1", "unsupported", what});
  }
  const std::vector<std::pair<std::string, std::string>> atRender = {
      {"{{ '%d items' % 3 }}", "'%'"},
      {"{{ 'x{}'.format(1) }}", "str.format"},
      {"{{ cycler(1, 2) }}", "cycler"},
      {"{{ 2 ** 64 }}", "64 bits"},
      {"{{ 9223372036854775807 + 1 }}", "64 bits"},
      {"{{ '\u01c6' | upper }}", "U+01C6"},
      {"{{ 'x'.zfill(3) }}", "str.zfill"},
      {"{{ 1.5 | round(-1) }}", "negative precision"},
      {"{% set ns = namespace() %}{% set ns.me = ns %}", "namespace"},
      {"{{ [1, 2] | select }}", "memory address"},
      {"{{ ('a<b' | safe).split('<') }}", "Markup"},
  };
  for (const auto& [text, what] : atRender) {
    SCOPED_TRACE(text);
    ChatTemplate tmpl(text, "src.jinja");
    test::expectErrorContaining([&] { tmpl.render(nlohmann::json::object()); },
                                {"src.jinja", "line 1", what});
  }
}

TEST(ChatTemplate, DeepNestingAndRunawayTemplatesFailCleanly) {
  const int n = 20000;
  // Deep syntax: parentheses, lists, blocks.
  test::expectErrorContaining(
      [&] {
        ChatTemplate("{{ " + std::string(n, '(') + "1" + std::string(n, ')') + " }}", "deep");
      },
      {"deep", "line 1", "nesting"});
  test::expectErrorContaining(
      [&] { ChatTemplate("{{ " + std::string(n, '[') + std::string(n, ']') + " }}", "deep"); },
      {"deep", "line 1", "nesting"});
  std::string blocks;
  for (int k = 0; k < n; ++k) blocks += "{% if true %}";
  for (int k = 0; k < n; ++k) blocks += "{% endif %}";
  test::expectErrorContaining([&] { ChatTemplate(blocks, "deep"); }, {"deep", "line 1", "nesting"});
  std::string nots = "{{ ";
  for (int k = 0; k < n; ++k) nots += "not ";
  test::expectErrorContaining([&] { ChatTemplate(nots + "x }}", "deep"); },
                              {"deep", "line 1", "nesting"});

  const nlohmann::json none = nlohmann::json::object();
  // Unbounded recursion, loops and growth.
  ChatTemplate recursion("{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}", "rec");
  test::expectErrorContaining([&] { recursion.render(none); }, {"rec", "line 1", "recursion"});
  ChatTemplate spin(
      "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "spin");
  test::expectErrorContaining([&] { spin.render(none); }, {"spin", "line 1", "too much work"});
  ChatTemplate scan(
      "{% set s = 'x' * 1000000 %}{% for i in range(100000) %}{% if 'y' in s %}{% endif %}"
      "{% endfor %}",
      "scan");
  test::expectErrorContaining([&] { scan.render(none); }, {"scan", "line 1", "too much work"});
  ChatTemplate nest(
      "{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor %}",
      "nest");
  test::expectErrorContaining([&] { nest.render(none); }, {"nest", "line 1", "nested"});
  ChatTemplate big("{{ 'abcdefgh' * 100000000 }}", "big");
  test::expectErrorContaining([&] { big.render(none); }, {"big", "line 1", "64 MiB"});
  ChatTemplate doubling(
      "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
      "{% endfor %}",
      "doubling");
  test::expectErrorContaining([&] { doubling.render(none); }, {"doubling", "line 1", "64 MiB"});

  // A context nested deeper than any chat needs, as a hostile data file would hold it.
  const nlohmann::json deep =
      nlohmann::json::parse("{\"messages\": " + std::string(n, '[') + std::string(n, ']') + "}");
  ChatTemplate printer("{{ messages }}", "ctx");
  test::expectErrorContaining([&] { printer.render(deep); }, {"ctx", "nested"});
}

TEST(ChatTemplate, JsonOverloadSortsKeysOrderedOverloadKeepsThem) {
  ChatTemplate tmpl("{{ tool | tojson }}", "src");
  const char* text =
      R"({"tool": {"name": "f", "description": "d", "arguments": {"b": 1, "a": 2}}})";
  EXPECT_EQ(tmpl.renderOrdered(ordered_json::parse(text)),
            R"({"name": "f", "description": "d", "arguments": {"b": 1, "a": 2}})");
  EXPECT_EQ(tmpl.render(nlohmann::json::parse(text)),
            R"({"arguments": {"a": 2, "b": 1}, "description": "d", "name": "f"})");
}

TEST(ChatTemplate, GenerationBlocksReportTheirSpans) {
  ChatTemplate tmpl(
      "{% for m in messages %}{% if m.role == 'assistant' %}<a>{% generation %}{{ m.content }}"
      "{% endgeneration %}</a>{% else %}<u>{{ m.content }}</u>{% endif %}{% endfor %}",
      "gen");
  const ChatRender r = tmpl.renderWithSpans(ordered_json::parse(
      R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                       {"role": "user", "content": "q"}, {"role": "assistant", "content": "ans"}]})"));
  EXPECT_EQ(r.text, "<u>hi</u><a>yo</a><u>q</u><a>ans</a>");
  ASSERT_EQ(r.generationSpans.size(), 2u);
  EXPECT_EQ(r.text.substr(r.generationSpans[0].first,
                          r.generationSpans[0].second - r.generationSpans[0].first),
            "yo");
  EXPECT_EQ(r.text.substr(r.generationSpans[1].first,
                          r.generationSpans[1].second - r.generationSpans[1].first),
            "ans");
}

TEST(ChatTemplate, StrftimeNowUsesLocalTime) {
  ChatTemplate tmpl("{{ strftime_now('%Y') }}|{{ strftime_now('%d %b %Y') | length }}", "time");
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  const std::string out = tmpl.render(nlohmann::json::object());
  EXPECT_EQ(out, std::to_string(1900 + tm.tm_year) + "|11");
}

TEST(ChatTemplate, RenderIsSafeFromSeveralThreads) {
  auto file = findChatTemplate(templatesDir() / "qwen3");
  ASSERT_TRUE(file.has_value());
  const ChatTemplate tmpl(file->text, file->source);
  const ordered_json doc = loadCases();
  std::vector<std::pair<ordered_json, std::string>> work;
  for (const auto& c : doc.at("cases"))
    if (c.value("model", std::string()) == "qwen3" && c.contains("expected"))
      work.emplace_back(c.at("context"), c.at("expected").get<std::string>());
  ASSERT_FALSE(work.empty());
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round)
        for (const auto& [ctx, want] : work) mismatches[t] += tmpl.renderOrdered(ctx) != want;
    });
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

// ---- findChatTemplate

TEST(ChatTemplate, FindPrefersJinjaFileAndReadsTokens) {
  test::TempDir dir;
  test::writeBytes(dir / "chat_template.jinja", "{{ bos_token }}jinja file");
  test::writeBytes(dir / "tokenizer_config.json",
                   R"({"chat_template": "from config", "bos_token": {"__type": "AddedToken",
                       "content": "<s>", "lstrip": false}, "eos_token": "</s>"})");
  auto found = findChatTemplate(dir.path());
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->text, "{{ bos_token }}jinja file");
  EXPECT_EQ(found->source, (dir / "chat_template.jinja").string());
  EXPECT_EQ(found->bosToken, "<s>");
  EXPECT_EQ(found->eosToken, "</s>");

  std::filesystem::remove(dir / "chat_template.jinja");
  found = findChatTemplate(dir.path());
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->text, "from config");
  EXPECT_EQ(found->source, (dir / "tokenizer_config.json").string() + ": chat_template");
}

TEST(ChatTemplate, FindTakesTheDefaultOfANamedList) {
  test::TempDir dir;
  test::writeBytes(dir / "tokenizer_config.json",
                   R"({"chat_template": [{"name": "tool_use", "template": "tools"},
                                         {"name": "default", "template": "plain"}],
                       "bos_token": null})");
  auto found = findChatTemplate(dir.path());
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->text, "plain");
  EXPECT_NE(found->source.find("chat_template[default]"), std::string::npos);
  EXPECT_EQ(found->bosToken, "");
  EXPECT_EQ(found->eosToken, "");
}

TEST(ChatTemplate, FindReturnsNulloptWithoutATemplate) {
  test::TempDir dir;
  EXPECT_FALSE(findChatTemplate(dir.path()).has_value());
  test::writeBytes(dir / "tokenizer_config.json", R"({"eos_token": "</s>"})");
  EXPECT_FALSE(findChatTemplate(dir.path()).has_value());
  test::writeBytes(dir / "tokenizer_config.json", R"({"chat_template": null})");
  EXPECT_FALSE(findChatTemplate(dir.path()).has_value());
}

TEST(ChatTemplate, FindRejectsMalformedFilesNamingFileAndField) {
  test::TempDir dir;
  const std::string config = (dir / "tokenizer_config.json").string();
  test::writeBytes(dir / "tokenizer_config.json", R"({"chat_template": "x",)");
  test::expectErrorContaining([&] { findChatTemplate(dir.path()); }, {config, "JSON"});
  test::writeBytes(dir / "tokenizer_config.json", R"({"chat_template": 42})");
  test::expectErrorContaining([&] { findChatTemplate(dir.path()); }, {config, "chat_template"});
  test::writeBytes(dir / "tokenizer_config.json",
                   R"({"chat_template": [{"name": "tool_use", "template": "t"}]})");
  test::expectErrorContaining([&] { findChatTemplate(dir.path()); },
                              {config, "chat_template", "default", "tool_use"});
  test::writeBytes(dir / "tokenizer_config.json", R"({"chat_template": [{"name": "default"}]})");
  test::expectErrorContaining([&] { findChatTemplate(dir.path()); }, {config, "chat_template"});
  test::writeBytes(dir / "tokenizer_config.json", R"({"chat_template": "x", "bos_token": 7})");
  test::expectErrorContaining([&] { findChatTemplate(dir.path()); }, {config, "bos_token"});
  test::writeBytes(dir / "tokenizer_config.json", R"(["not", "an", "object"])");
  test::expectErrorContaining([&] { findChatTemplate(dir.path()); }, {config, "object"});
}

}  // namespace
}  // namespace upcycle
