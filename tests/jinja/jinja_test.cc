// The interpreter construct by construct. Expected texts are what Python's
// Jinja2 renders with Hugging Face's settings (trim_blocks, lstrip_blocks);
// tests/tokenizer/chat_templates/ checks whole publisher templates against it.
#include <chrono>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "jinja/json_value.h"
#include "jinja/template.h"

namespace expertd::jinja {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<std::string> TryRender(const std::string& source, const std::string& context_json = "{}",
                                      const RenderOptions& options = {}) {
  absl::StatusOr<Template> t = Template::Parse(source);
  if (!t.ok()) return t.status();
  const Value context = ValueFromJson(nlohmann::ordered_json::parse(context_json));
  return t->Render(context.dict(), options);
}

std::string Render(const std::string& source, const std::string& context_json = "{}") {
  absl::StatusOr<std::string> out = TryRender(source, context_json);
  EXPECT_TRUE(out.ok()) << out.status() << "\n  template: " << source;
  return out.ok() ? *out : "<error>";
}

TEST(JinjaLexer, WhitespaceControlAndHuggingFaceTrimming) {
  EXPECT_EQ(Render("a  {{- 'b' -}}  c"), "abc");
  EXPECT_EQ(Render("a\n  {%- if true %}b{% endif -%}\n  c"), "abc");
  // trim_blocks drops the newline after a block tag; lstrip_blocks the
  // indentation before it.
  EXPECT_EQ(Render("x\n    {% if true %}\n  y\n    {% endif %}\nz"), "x\n  y\nz");
  // Neither applies to {{ }}.
  EXPECT_EQ(Render("  {{ 'v' }}\nw"), "  v\nw");
  // '+' keeps what lstrip_blocks would strip.
  EXPECT_EQ(Render("  {%+ if true %}k{% endif %}"), "  k");
  // Comments vanish, trimmed like blocks.
  EXPECT_EQ(Render("a\n  {# note #}\nb{#- x -#}  c"), "a\nbc");
  // Raw text is not interpreted.
  EXPECT_EQ(Render("{% raw %}{{ x }}{% endraw %}"), "{{ x }}");
  // One trailing newline of the template is dropped, as Jinja2 does.
  EXPECT_EQ(Render("t\n"), "t");
  EXPECT_EQ(Render("t\n\n"), "t\n");
}

TEST(JinjaExpressions, ArithmeticAndPythonSemantics) {
  EXPECT_EQ(Render("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 % 3 }} {{ 3 / 2 }} {{ 2 ** 10 }} {{ 1.0 }} {{ 1e20 }}"),
            "7 3 2 1.5 1024 1.0 1e+20");
  EXPECT_EQ(Render("{{ 'a' ~ 1 ~ none }} {{ 'x' * 3 }} {{ [1] + [2] }}"), "a1None xxx [1, 2]");
  EXPECT_EQ(Render("{{ [1, 'a', none, true, {'k': 0.5}] }}"), "[1, 'a', None, True, {'k': 0.5}]");
  EXPECT_EQ(Render("{{ 1 < 2 < 3 }} {{ 'b' in 'abc' }} {{ 2 not in [1, 3] }} {{ 'k' in {'k': 1} }}"), "True True True True");
  EXPECT_EQ(Render("{{ 0 or 'x' }} {{ 'a' and '' }}|{{ not none }}"), "x |True");
  EXPECT_EQ(Render("{{ 'y' if false else 'n' }}|{{ 'y' if false }}|"), "n||");
  EXPECT_EQ(Render("{{ 1 == 1.0 }} {{ {'a': [1]} == {'a': [1]} }}"), "True True");
  EXPECT_EQ(Render("{{ 'a' 'b' }}"), "ab");  // adjacent literals join
}

TEST(JinjaExpressions, SubscriptsSlicesAndAttributes) {
  const std::string context = R"({"m": {"role": "user", "content": "héllo"}, "l": [1, 2, 3, 4]})";
  EXPECT_EQ(Render("{{ l[0] }} {{ l[-1] }} {{ l[1:3] }} {{ l[::-1] }} {{ l[:-1] }} {{ l[::2] }}", context),
            "1 4 [2, 3] [4, 3, 2, 1] [1, 2, 3] [1, 3]");
  // Strings index by code point.
  EXPECT_EQ(Render("{{ m.content[1] }} {{ m.content[-4:] }} {{ m.content|length }}", context), "é éllo 5");
  // Attribute access falls back to items, and item access to attributes.
  EXPECT_EQ(Render("{{ m.role }} {{ m['role'] }} {{ l.0 }}", context), "user user 1");
  EXPECT_EQ(Render("[{{ m.missing }}][{{ m['missing'] }}][{{ l[9] }}]", context), "[][][]");
}

TEST(JinjaUndefined, RendersEmptyIsFalseAndFailsWhenUsed) {
  EXPECT_EQ(Render("[{{ nothing }}]{% if nothing %}x{% endif %}{% for i in nothing %}y{% endfor %}{{ nothing|length }}"),
            "[]0");
  EXPECT_EQ(Render("{{ nothing is defined }} {{ nothing is undefined }} {{ nothing|default('d') }}"), "False True d");
  absl::StatusOr<std::string> out = TryRender("line one\n{{ nothing.attr }}");
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("line 2"));
  EXPECT_THAT(out.status().message(), HasSubstr("'nothing' is undefined"));
  out = TryRender("{{ m.a.b }}", R"({"m": {}})");
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("'dict object' has no attribute 'a'"));
  EXPECT_FALSE(TryRender("{{ nothing + 1 }}").ok());
}

TEST(JinjaTests, IsTests) {
  EXPECT_EQ(Render("{{ none is none }} {{ 'a' is string }} {{ {} is mapping }} {{ [] is iterable }} {{ 1 is number }}"
                   " {{ 'a' is sequence }} {{ true is true }} {{ 0 is false }} {{ false is false }} {{ 3 is odd }}"
                   " {{ 1 is not string }} {{ 4 is divisibleby 2 }} {{ 'A' is upper }} {{ x is sameas none }}",
                   R"({"x": null})"),
            "True True True True True True True False True True True True True True");
}

TEST(JinjaStatements, IfElifElseAndForLoops) {
  EXPECT_EQ(Render("{% for x in [1, 2, 3] %}{% if x == 1 %}a{% elif x == 2 %}b{% else %}c{% endif %}{% endfor %}"), "abc");
  EXPECT_EQ(Render("{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}"
                   "{{ loop.length }};{% endfor %}"),
            "103TrueFalse3;212FalseFalse3;321FalseTrue3;");
  EXPECT_EQ(Render("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}{{ loop.last }}{% endfor %}"), "2False4True");
  EXPECT_EQ(Render("{% for x in [] %}no{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(Render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }},{% endfor %}"), "a=1,b=2,");
  EXPECT_EQ(Render("{% for k in {'z': 1, 'a': 2} %}{{ k }}{% endfor %}"), "za");  // insertion order
  EXPECT_EQ(Render("{% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}"
                   "{{ x }}{% endfor %}"),
            "13");
  EXPECT_EQ(Render("{% for x in [1, 2] %}{{ loop.previtem }}|{{ loop.nextitem }};{% endfor %}"), "|2;1|;");
}

TEST(JinjaStatements, SetScopesAsJinja2Does) {
  // A set inside a loop lasts one iteration; a namespace carries state out.
  EXPECT_EQ(Render("{% set x = 0 %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{{ x }}{% endfor %}{{ x }}"), "01020");
  EXPECT_EQ(Render("{% set ns = namespace(n=0) %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"), "6");
  // A set inside if belongs to the enclosing scope.
  EXPECT_EQ(Render("{% if true %}{% set y = 'in' %}{% endif %}{{ y }}"), "in");
  EXPECT_EQ(Render("{% set a, b = [1, 2] %}{{ b }}{{ a }}"), "21");
  EXPECT_EQ(Render("{% set block %}x{{ 1 + 1 }}{% endset %}[{{ block }}]"), "[x2]");
  EXPECT_FALSE(TryRender("{% set s = 'a' %}{% set s.x = 1 %}").ok());
}

TEST(JinjaStatements, MacrosAndCallBlocks) {
  EXPECT_EQ(Render("{% macro m(a, b=2) %}{{ a }}{{ b }}{{ g }}{% endmacro %}{% set g = 9 %}{{ m(1) }}{{ m(1, b=3) }}"), "129139");
  EXPECT_EQ(Render("{% macro w() %}<{{ caller() }}>{% endmacro %}{% call w() %}in{% endcall %}"), "<in>");
  EXPECT_EQ(Render("{% filter upper %}abc{% endfilter %}"), "ABC");
}

TEST(JinjaFilters, FiltersTemplatesUse) {
  const std::string context =
      R"({"ms": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "user", "content": "v"}]})";
  EXPECT_EQ(Render("{{ '  x  '|trim }}|{{ 'ab'|upper }}{{ 'AB'|lower }}|{{ [1, 2]|join(', ') }}|{{ [3, 4]|first }}{{ [3, 4]|last }}"
                   "|{{ 'abc'|list }}|{{ 5|string }}|{{ '42'|int + 1 }}|{{ 'x'|int }}|{{ 'hello world'|capitalize }}"
                   "|{{ 'a-b'|replace('-', '+') }}|{{ ['a', 'A', 'b']|unique|list }}|{{ [1, 2]|length }}{{ {'a': 1}|count }}"),
            "x|ABab|1, 2|34|['a', 'b', 'c']|5|43|0|Hello world|a+b|['a', 'b']|21");
  EXPECT_EQ(Render("{{ ms|selectattr('role', 'equalto', 'user')|map(attribute='content')|join }}"
                   "|{{ ms|rejectattr('role', 'equalto', 'user')|list|length }}|{{ {'b': 1}|items|list }}"
                   "|{{ [1, 2, 3]|reject('equalto', 2)|list }}|{{ ['a', 'b']|map('upper')|join }}",
                   context),
            "uv|1|[('b', 1)]|[1, 3]|AB");
  EXPECT_EQ(Render("{{ none|default('d') }}|{{ ''|default('d', true) }}|{{ 'ab'|safe }}|{{ [3, 1, 2]|sort|list }}"), "None|d|ab|[1, 2, 3]");
}

TEST(JinjaFilters, QuirksRealTemplatesRelyOn) {
  // Dict literals may have number keys (Seed-OSS), sorted by dictsort.
  EXPECT_EQ(Render("{% set d = {512: 'b', 0: 'a'} %}{{ d[0] }}{{ d[512] }}{% for k, v in d|dictsort %}{{ k }}{% endfor %}"), "ab0512");
  // A |safe string is Markup: adding a plain string escapes it (functionary).
  EXPECT_EQ(Render("{{ '<a>'|safe + '<b>' }}|{{ '<a>' + '<b>' }}"), "<a>&lt;b&gt;|<a><b>");
  // select/map read their input only when it is true: none gives nothing.
  EXPECT_EQ(Render("{{ none|selectattr('type', 'equalto', 'x')|list|length }}"), "0");
}

TEST(JinjaFilters, ToJsonAsHuggingFaceWritesIt) {
  const std::string context = R"({"t": {"name": "f", "params": {"x": [1, 2.5, true, null]}, "s": "é\"\n</"}})";
  EXPECT_EQ(Render("{{ t|tojson }}", context), R"({"name": "f", "params": {"x": [1, 2.5, true, null]}, "s": "é\"\n</"})");
  EXPECT_EQ(Render("{{ t.params|tojson(indent=2) }}", context), "{\n  \"x\": [\n    1,\n    2.5,\n    true,\n    null\n  ]\n}");
  EXPECT_EQ(Render("{{ [] | tojson }}{{ {} | tojson }}"), "[]{}");
  EXPECT_EQ(Render("{{ 'é😀'|tojson(ensure_ascii=True) }} {{ 'é'|tojson(ensure_ascii=false) }}"), "\"\\u00e9\\ud83d\\ude00\" \"é\"");
  EXPECT_FALSE(TryRender("{{ nothing|tojson }}").ok());
}

TEST(JinjaMethods, StringAndDictMethods) {
  EXPECT_EQ(Render("{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }} {{ 'a,b,,c'.split(',') }}"
                   " {{ ' a  b '.split() }} {{ 'a</think>b</think>c'.split('</think>', 1) }} {{ '\\n x\\n'.strip() }}"
                   " {{ 'xxayy'.lstrip('x') }} {{ 'xxayy'.rstrip('y') }} {{ 'aXa'.replace('a', 'b') }} {{ 'ab cd'.title() }}"
                   " {{ '{} and {name}'.format(1, name='n') }}"),
            "True True ['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b</think>c'] x ayy xxa bXb Ab Cd 1 and n");
  EXPECT_EQ(Render("{{ d.get('a') }} {{ d.get('z', 'no') }} {{ d.get('z') }} {{ d.keys()|list }} {{ d.values()|list }}",
                   R"({"d": {"a": 1, "b": 2}})"),
            "1 no None ['a', 'b'] [1, 2]");
}

TEST(JinjaGlobals, RaiseExceptionIsDistinctAndCarriesTheMessage) {
  absl::StatusOr<std::string> out = TryRender("{{ raise_exception('Roles must alternate') }}");
  ASSERT_FALSE(out.ok());
  EXPECT_TRUE(IsRaisedByTemplate(out.status()));
  EXPECT_EQ(out.status().message(), "Roles must alternate");
  out = TryRender("{{ 1 + 'a' }}");
  ASSERT_FALSE(out.ok());
  EXPECT_FALSE(IsRaisedByTemplate(out.status()));
}

TEST(JinjaGlobals, StrftimeNowRangeAndNamespace) {
  RenderOptions options;
  options.now = std::chrono::system_clock::from_time_t(86400 * 365);  // a fixed instant; the format below is date-only
  absl::StatusOr<std::string> out = TryRender("{{ strftime_now('%Y') }}", "{}", options);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "1971");
  EXPECT_EQ(Render("{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ namespace(a=1).a }} {{ dict(k='v').k }}"),
            "[0, 1, 2] [1, 3, 5] 1 v");
}

TEST(JinjaErrors, SyntaxErrorsNameLineAndColumn) {
  absl::StatusOr<Template> t = Template::Parse("ok\n{% if x %}\nno end");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("{% endif %}"));
  t = Template::Parse("a\n  {{ 1 + }}");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("line 2 column"));
  EXPECT_FALSE(Template::Parse("{% frobnicate %}").ok());
  EXPECT_FALSE(Template::Parse("{{ 'unclosed }}").ok());
  EXPECT_FALSE(Template::Parse("{# never closed").ok());
}

TEST(JinjaLimits, LoopsOutputAndNestingAreBounded) {
  RenderOptions options;
  options.limits.max_loop_iterations = 1000;
  absl::StatusOr<std::string> out = TryRender("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}", "{}", options);
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("1000 iterations"));
  options = RenderOptions();
  options.limits.max_output_bytes = 100;
  out = TryRender("{% for i in range(50) %}0123456789{% endfor %}", "{}", options);
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("100 bytes"));
  out = TryRender("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}");
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("nested deeper"));
  EXPECT_FALSE(Template::Parse("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}").ok());
  // A long flat chain parses in a loop but would evaluate recursively.
  std::string chain = "{{ 1";
  for (int i = 0; i < 5000; ++i) chain += " + 1";
  EXPECT_FALSE(Template::Parse(chain + " }}").ok());
  // Arithmetic that would overflow or loop long fails or finishes at once.
  EXPECT_FALSE(TryRender("{{ 9223372036854775807 + 1 }}").ok());
  EXPECT_FALSE(TryRender("{{ -(-9223372036854775807 - 1) }}").ok());
  EXPECT_EQ(Render("{{ 1 ** 1000000000000000000 }} {{ (-1) ** 999999999999999999 }} {{ 2 ** 62 }}"),
            "1 -1 4611686018427387904");
  EXPECT_FALSE(TryRender("{{ 2 ** 64 }}").ok());
}

}  // namespace
}  // namespace expertd::jinja
