#!/usr/bin/env python3
"""Writes the chat-template test fixture: what transformers' apply_chat_template renders for real templates and
for one small template per Jinja construct the C++ interpreter (src/tokenizer/jinja_*) supports.

Reads testdata/chat_template/*.jinja (the chat_template strings of Qwen2.5-Instruct, Qwen3, Dream-v0-Instruct,
LLaDA-8B-Instruct) and writes testdata/chat_template/cases.json:
  {"engine": "transformers 4.x" | "jinja2 3.x (transformers environment re-created)",
   "cases": [{"name", "template" (a .jinja file name) or "source" (inline template), "messages",
              "add_generation_prompt", "vars" (extra variables, any JSON type),
              "expected" (rendered text) or "error" (the Python exception, when rendering raised)}]}

Engines:
  --engine transformers (default): tokenizer.apply_chat_template(messages, chat_template=..., tokenize=False,
      add_generation_prompt=..., **vars) on a tiny in-memory PreTrainedTokenizerFast (no special tokens, so only
      the variables given are defined). This is the reference the fixture is committed from.
  --engine jinja2: the same Jinja environment transformers builds (ImmutableSandboxedEnvironment, trim_blocks,
      lstrip_blocks, loopcontrols, {% generation %}, tojson = json.dumps(ensure_ascii=False), raise_exception),
      for machines without transformers.

Usage: python3 tools/make_chat_template_cases.py [--engine transformers|jinja2] [--out PATH]
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "testdata", "chat_template")

USER = {"role": "user", "content": "hi"}

# ---- conversations for the real templates ----
CONVERSATIONS = {
    "user_only": [{"role": "user", "content": "Hello!"}],
    "system_user": [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "Where is the treasure?"},
    ],
    "multi_turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    "multi_turn_no_system": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ],
    "whitespace_and_unicode": [
        {"role": "user", "content": "  Résumé:\n\tnaïve café 世界 🙂  \n"},
    ],
    "thinking_history": [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>\nstep one\n</think>\n\nA1"},
        {"role": "user", "content": "Q2"},
    ],
    "thinking_last_assistant": [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>\nreasoning\n</think>\n\nfinal"},
    ],
    "tool_response_turn": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Let me check."},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "22C"},
    ],
}

TEMPLATES = {
    "qwen2_5_instruct.jinja": {"eos_token": "<|im_end|>"},
    "qwen3.jinja": {"eos_token": "<|im_end|>"},
    "dream_v0_instruct.jinja": {"bos_token": "<|beginoftext|>", "eos_token": "<|endoftext|>"},
    "llada_8b_instruct.jinja": {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>"},
}

# ---- one small template per construct: (name, source, vars[, messages]) ----
CONSTRUCTS = [
    ("text_only", "plain text", {}),
    ("output_literals", "{{ 'a' }}|{{ \"b\" }}|{{ 1 }}|{{ -2 }}|{{ 1.5 }}|{{ true }}|{{ False }}|{{ none }}|{{ None }}", {}),
    ("string_escapes", r'''{{ 'it\'s' }}|{{ "q\"" }}|{{ 'a\nb\tc\\d' }}|{{ '\x41\u00e9' }}|{{ 'unknown \q' }}''', {}),
    ("adjacent_strings", "{{ 'a' 'b' \"c\" }}", {}),
    ("variables", "{{ name }}-{{ n }}-{{ flag }}", {"name": "Ann", "n": 3, "flag": True}),
    ("undefined_renders_empty", "[{{ missing }}]{% if missing %}yes{% else %}no{% endif %}", {}),
    ("attribute_and_subscript", "{{ m.role }}/{{ m['content'] }}/{{ messages[0].role }}/{{ messages[-1]['content'] }}",
     {"m": {"role": "r", "content": "c"}}),
    ("missing_key_is_undefined", "[{{ m.nope }}]{{ m.nope is defined }}{{ m['nope'] is undefined }}", {"m": {"a": 1}}),
    ("list_index_out_of_range", "[{{ xs[5] }}]{{ xs[5] is defined }}", {"xs": [1, 2]}),
    ("slicing", "{{ xs[1:] }}|{{ xs[::-1] }}|{{ xs[:-1] }}|{{ xs[::2] }}|{{ xs[1:3] }}|{{ xs[10:] }}|{{ s[1:4] }}|{{ s[::-1] }}",
     {"xs": [1, 2, 3, 4, 5], "s": "héllo wörld"}),
    ("string_index", "{{ s[0] }}{{ s[-1] }}{{ s|length }}", {"s": "ünï"}),
    ("arithmetic", "{{ 1 + 2 }} {{ 7 - 10 }} {{ 3 * 4 }} {{ 7 / 2 }} {{ 8 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 1 + 0.5 }} {{ 2 * 1.5 }} {{ 0.1 + 0.2 }}", {}),
    ("precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ not true or true }} {{ not (true or true) }}", {}),
    ("string_concat", "{{ 'a' + 'b' }}|{{ 'n=' ~ 5 ~ none ~ true ~ missing }}|{{ xs + [3] }}|{{ 'ab' * 3 }}", {"xs": [1, 2]}),
    ("comparisons", "{{ 1 == 1 }}{{ 1 != 2 }}{{ 1 < 2 }}{{ 2 <= 2 }}{{ 3 > 2 }}{{ 2 >= 3 }}{{ 'a' < 'b' }}{{ 1 == 1.0 }}{{ true == 1 }}{{ [1, 2] == [1, 2] }}{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}{{ 'x' == 1 }}", {}),
    ("logic_returns_operands", "{{ none or 'fallback' }}|{{ 'x' and 'y' }}|{{ '' and 'y' }}|{{ 0 or [] }}|{{ not none }}", {}),
    ("membership", "{{ 'b' in 'abc' }}{{ 'z' not in 'abc' }}{{ 2 in [1, 2] }}{{ 'k' in d }}{{ 'v' in d }}{{ 'a' in missing }}",
     {"d": {"k": "v"}}),
    ("tests", "{{ x is defined }}{{ y is defined }}{{ y is not defined }}{{ n is none }}{{ s is string }}{{ x is string }}{{ x is number }}{{ x is integer }}{{ f is float }}{{ b is boolean }}{{ b is true }}{{ b is false }}{{ d is mapping }}{{ l is iterable }}{{ s is sequence }}{{ x is odd }}{{ x is even }}{{ x is divisibleby 3 }}{{ x is divisibleby(2) }}{{ s is lower }}{{ s is upper }}",
     {"x": 3, "n": None, "s": "str", "f": 1.5, "b": False, "d": {}, "l": []}),
    ("comparison_tests", "{{ 3 is eq 3 }}{{ 3 is equalto 4 }}{{ 3 is ne 4 }}{{ 3 is lt 4 }}{{ 3 is gt 4 }}{{ 3 is le 3 }}{{ 3 is ge 4 }}{{ 2 is in [1, 2] }}{{ none is sameas none }}", {}),
    ("ternary", "{{ 'yes' if flag else 'no' }}|{{ 'yes' if not flag else 'no' }}|[{{ 'only' if false }}]|{{ 'a' if false else 'b' if true else 'c' }}", {"flag": True}),
    ("if_elif_else", "{% for x in [1, 2, 3, 4] %}{% if x == 1 %}one{% elif x == 2 %}two{% elif x == 3 %}three{% else %}many{% endif %},{% endfor %}", {}),
    ("for_loop_variables", "{% for x in ['a', 'b', 'c'] %}{{ loop.index0 }}{{ loop.index }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ x }};{% endfor %}", {}),
    ("for_prev_next_cycle", "{% for x in [1, 2, 3] %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }}{{ loop.cycle('o', 'e') }} {% endfor %}", {}),
    ("for_over_dict_and_string", "{% for k in d %}{{ k }}={{ d[k] }};{% endfor %}|{% for k, v in d.items() %}{{ k }}:{{ v }},{% endfor %}|{% for c in 'héy' %}[{{ c }}]{% endfor %}",
     {"d": {"b": 1, "a": 2}}),
    ("for_else_and_filter", "{% for x in [] %}x{% else %}empty{% endfor %}|{% for x in range(10) if x is odd %}{{ x }}{{ loop.length }},{% endfor %}", {}),
    ("nested_loops", "{% for r in rows %}{% for c in r %}{{ loop.index }}{{ c }}{% endfor %}/{{ loop.index }};{% endfor %}", {"rows": [["a", "b"], ["c"]]}),
    ("break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("set_and_scoping", "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = x + 10 %}{{ x }},{% endfor %}{{ x }}|{% if true %}{% set y = 5 %}{% endif %}{{ y }}", {}),
    ("top_level_set_hides_variable", "{% for i in [1] %}[{{ n }}]{% endfor %}{% macro f() %}({{ n }}){% endmacro %}{{ f() }}{% set n = 5 %}{{ n }}{{ f() }}", {"n": 3}),
    ("conditional_set_keeps_variable", "{% if false %}{% set n = 5 %}{% endif %}{% for i in [1] %}[{{ n }}]{% endfor %}{{ n }}|{{ m }}{% set m = m + 1 %}{{ m }}", {"n": 3, "m": 1}),
    ("namespace_escapes_loop", "{% set ns = namespace(count=0, found=false) %}{% for m in messages %}{% set ns.count = ns.count + 1 %}{% if m.role == 'user' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.count }} {{ ns.found }}",
     {}, [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]),
    ("set_tuple_and_block", "{% set a, b = 1, 'two' %}{{ a }}{{ b }}|{% set blk %}x={{ a + 1 }}{% endset %}[{{ blk }}]", {}),
    ("lists_and_dicts", "{{ [1, 'a', none, [true]] }}|{{ {'k': 'v', 'n': 1} }}|{{ {'k': 'v'}['k'] }}|{{ [] }}|{{ (1, 2) | list }}|{{ [1, 2,] | length }}", {}),
    ("repr_of_strings", "{{ [\"it's\", 'say \"hi\"', 'both \\' \"', 'nl\\n'] }}", {}),
    ("filters_text", "[{{ '  pad  ' | trim }}][{{ 'xxhixx' | trim('x') }}][{{ 'Hello' | upper }}][{{ 'Hello' | lower }}][{{ 'hello wORLD' | capitalize }}][{{ 'hello big-world (x)' | title }}][{{ 42 | string }}][{{ 'a-b-c' | replace('-', '+') }}][{{ 'a<b>&\"' | e }}][{{ 'x' | safe }}]", {}),
    ("filter_binds_tighter_than_plus", "{{ '<' + s | trim + '>' }}|{{ xs | length - 1 }}|{{ -1 | abs }}", {"s": "  x  ", "xs": [1, 2, 3]}),
    ("filters_sequences", "{{ xs | length }} {{ xs | count }} {{ xs | first }} {{ xs | last }} {{ xs | join(',') }} {{ xs | reverse | list }} {{ 'abc' | list }} {{ 'abc' | reverse }} {{ d | items | list }} {{ d | length }} {{ s | length }} {{ missing | length }}",
     {"xs": [3, 1, 2], "d": {"a": 1, "b": 2}, "s": "日本語"}),
    ("filter_default", "{{ missing | default('dflt') }}|{{ '' | default('dflt') }}|{{ '' | default('dflt', true) }}|{{ none | d('x') }}|{{ 'v' | default('dflt') }}", {}),
    ("filters_numbers", "{{ '42' | int }} {{ '4.7' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '2.5' | float }} {{ 3 | float }} {{ -3 | abs }} {{ -2.5 | abs }}", {}),
    ("filters_select_map", "{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join('+') }}|{{ messages | rejectattr('role', 'eq', 'user') | list | length }}|{{ [1, 2, 3, 4] | select('odd') | list }}|{{ [1, 2, 3, 4] | reject('odd') | list }}|{{ ['a', 'b'] | map('upper') | list }}",
     {}, [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"}, {"role": "user", "content": "u2"}]),
    ("tojson", "{{ d | tojson }}|{{ s | tojson }}|{{ [1, 2.5, true, none] | tojson }}|{{ d | tojson(indent=2) }}|{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}|{{ 'é' | tojson(ensure_ascii=true) }}",
     {"d": {"name": "f", "args": {"x": [1, {}], "q": "a\"b\\c\n\t\u0001é"}}, "s": "日本"}),
    ("string_methods", "[{{ '  a b  '.strip() }}][{{ 'xxaxx'.lstrip('x') }}][{{ 'xxaxx'.rstrip('x') }}][{{ '\n\nhi\n'.lstrip('\n') }}][{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('bc') }}{{ 'abc'.startswith('c') }}][{{ 'a,b,,c'.split(',') }}][{{ ' a  b '.split() }}][{{ 'a,b,c'.split(',', 1) }}][{{ 'aXbXc'.replace('X', '-') }}][{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}][{{ 'hello world'.title() }}][{{ 'abc'.find('c') }}][{{ '-'.join(['a', 'b']) }}]", {}),
    ("think_split", "{% set c = '<think>\nR\n</think>\n\nA' %}[{{ c.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') }}][{{ c.split('</think>')[-1].lstrip('\n') }}][{{ (c.split('</think>') | last).strip() }}]", {}),
    ("dict_methods", "{{ d.get('a') }}|{{ d.get('z') }}|{{ d.get('z', 'dflt') }}|{{ d.keys() | list }}|{{ d.values() | list }}|{{ d.items() | list }}", {"d": {"a": 1, "b": "x"}}),
    ("range_and_dict_globals", "{{ range(3) | list }}{{ range(1, 7, 2) | list }}{{ range(3, 0, -1) | list }}|{{ dict(a=1, b='x') }}", {}),
    ("macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', punct='?') }} {{ greet(name='Cy') }}", {}),
    ("macro_sees_outer_vars", "{% set who = 'world' %}{% macro hello() %}hello {{ who }}{% endmacro %}{{ hello() }}", {}),
    ("comments", "a{# a comment #}b{#- trim -#}  c {# multi\nline #}d", {}),
    ("whitespace_control_dash", "a  {{- 'b' -}}  c\n  {%- if true -%}\n  d\n  {%- endif -%}  \ne", {}),
    ("trim_and_lstrip_blocks", "<ul>\n  {% for x in [1, 2] %}\n  <li>{{ x }}</li>\n  {% endfor %}\n</ul>\n", {}),
    ("plus_disables_lstrip_and_trim", "a\n  {%+ if true +%}\nb\n  {% endif %}\nc", {}),
    ("raw_block", "{% raw %}{{ not evaluated }} {% if %}{% endraw %}|{{ 1 }}", {}),
    ("trailing_newline_dropped", "line\n", {}),
    ("crlf_newlines", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc", {}),
    ("generation_block", "{% for m in messages %}{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}", {}),
    ("bos_token_var", "{{ bos_token }}x{{ eos_token }}", {"bos_token": "<s>", "eos_token": "</s>"}),
    ("messages_in_template", "{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}{% if add_generation_prompt %}A:{% endif %}",
     {}, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]),
    ("tools_is_none", "{{ tools is none }}{{ tools is defined }}{{ documents is none }}{% if not tools %}no tools{% endif %}", {}),
    ("nested_dict_literal_in_output", "{{ {'a': {'b': 1}} }}{{ {'x': [1, {'y': 2}]}['x'][1]['y'] }}", {}),
    ("dict_literal_ends_tag", "{% set d = {'a': {'b': 1}}%}{{ d.a.b }}", {}),
    ("integer_attribute_index", "{{ xs.0 }}{{ xs.1 }}", {"xs": ["p", "q"]}),
    ("unknown_filter_in_untaken_branch", "{% if false %}{{ x | frobnicate }}{% endif %}ok{{ 'y' if true else z | frobnicate }}", {}),
    ("messages_helpers", "{{ messages | length }}|{{ (messages | last).content }}|{{ messages[-1].role == 'user' }}|{{ messages | tojson }}",
     {}, [{"role": "system", "content": "s"}, {"role": "user", "content": "q \"x\""}]),
    ("unicode_whitespace_strip", "[{{ '\u00a0 x \u3000' | trim }}][{{ '\u2028y\u2029'.strip() }}][{{ 'a\u00a0b'.split() }}]", {}),
    ("float_output", "{{ 1e3 }}|{{ 2.50 }}|{{ 1 / 3 }}|{{ 1e-5 }}|{{ 1e16 }}|{{ 123456789.125 }}|{{ -0.0 }}|{{ 3 * 0.1 }}", {}),
]

# Templates that must fail (syntax or run-time error), checked only for failing.
ERRORS = [
    ("unterminated_variable", "hello {{ name", {}),
    ("unterminated_block", "{% if true %}x", {}),
    ("unterminated_block_tag", "{% if true", {}),
    ("unterminated_comment", "a {# comment", {}),
    ("unterminated_string", "{{ 'abc }}", {}),
    ("missing_endfor", "{% for x in xs %}{{ x }}", {"xs": [1]}),
    ("stray_endif", "{% endif %}", {}),
    ("unknown_tag", "{% frobnicate %}", {}),
    ("unknown_filter", "{{ 'x' | frobnicate }}", {}),
    ("unknown_test", "{{ 'x' is frobnicate }}", {}),
    ("raise_exception", "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}", {}),
    ("raise_exception_in_branch", "{% for m in messages %}{% if m.role == 'user' %}{{ raise_exception('no users allowed') }}{% endif %}{% endfor %}", {}),
    ("attribute_of_undefined", "{{ missing.attr }}", {}),
    ("add_undefined", "{{ missing + 'x' }}", {}),
    ("add_int_and_string", "{{ 1 + 'x' }}", {}),
    ("index_into_undefined", "{{ missing[0] }}", {}),
    ("call_undefined", "{{ missing() }}", {}),
    ("iterate_int", "{% for x in 5 %}{% endfor %}", {}),
    ("set_attr_on_non_namespace", "{% set d = {} %}{% set d.x = 1 %}", {}),
    ("division_by_zero", "{{ 1 // 0 }}", {}),
    ("break_outside_loop", "{% break %}", {}),
    ("unbalanced_paren", "{{ (1 + 2 }}", {}),
    ("bad_expression", "{{ 1 + }}", {}),
    ("range_too_big", "{{ range(200000) | length }}", {}),
    ("inline_if_in_if_test", "{% if 1 if true else 2 %}x{% endif %}", {}),
    ("unknown_filter_in_taken_branch", "{% if true %}{{ 'x' | frobnicate }}{% endif %}", {}),
    ("unknown_filter_in_loop_in_branch", "{% if false %}{% for x in xs %}{{ x | frobnicate }}{% endfor %}{% endif %}", {"xs": [1]}),
]


def make_jinja2_renderer():
    """The environment transformers' chat_template_utils builds, re-created with plain jinja2."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class AssistantTracker(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception

    def render(source, messages, add_generation_prompt, variables):
        return env.from_string(source).render(messages=messages, tools=None, documents=None,
                                              add_generation_prompt=add_generation_prompt, **variables)

    return render, f"jinja2 {jinja2.__version__} (transformers environment re-created)"


def make_transformers_renderer():
    import transformers
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")))

    def render(source, messages, add_generation_prompt, variables):
        return tok.apply_chat_template(messages, chat_template=source, tokenize=False,
                                       add_generation_prompt=add_generation_prompt, **variables)

    return render, f"transformers {transformers.__version__}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=["transformers", "jinja2"], default="transformers")
    ap.add_argument("--out", default=os.path.join(DATA, "cases.json"))
    args = ap.parse_args()
    render, engine = make_transformers_renderer() if args.engine == "transformers" else make_jinja2_renderer()

    cases = []

    def run(case, source):
        try:
            case["expected"] = render(source, case["messages"], case["add_generation_prompt"], case["vars"])
        except Exception as e:  # noqa: BLE001 - any failure of the reference is the expected outcome
            case["error"] = f"{type(e).__name__}: {e}"
        cases.append(case)

    for file, special in TEMPLATES.items():
        with open(os.path.join(DATA, file), encoding="utf-8") as f:
            source = f.read()
        for conv_name, messages in CONVERSATIONS.items():
            for agp in (True, False):
                run({"name": f"{file[:-6]}/{conv_name}/{'gen' if agp else 'nogen'}", "template": file,
                     "messages": messages, "add_generation_prompt": agp, "vars": dict(special)}, source)
        if file == "qwen3.jinja":
            for conv_name in ("user_only", "thinking_history"):
                run({"name": f"qwen3/{conv_name}/gen/no_thinking", "template": file,
                     "messages": CONVERSATIONS[conv_name], "add_generation_prompt": True,
                     "vars": dict(special, enable_thinking=False)}, source)
    for entry in CONSTRUCTS + ERRORS:
        name, source, variables = entry[:3]
        messages = entry[3] if len(entry) > 3 else [USER]
        run({"name": name, "source": source, "messages": messages, "add_generation_prompt": True,
             "vars": variables}, source)

    expected_errors = {name for name, _, _ in ERRORS}
    for c in cases:
        if ("error" in c) != (c["name"] in expected_errors):
            sys.exit(f"case {c['name']}: unexpected outcome {c.get('error') or 'success'}")

    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"engine": engine, "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(cases)} cases -> {args.out} ({engine})")


if __name__ == "__main__":
    main()
