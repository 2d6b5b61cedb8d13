// The layer rule of docs/DESIGN.md: each folder of src/ includes only itself and the folders below it. The order is
// read from DESIGN.md's "Layers" table (first column, bottom layer first), so the table is the one definition;
// every `#include "folder/..."` in src/ is checked against it and a violation is reported as file:line.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// The folders of the "## Layers" table, in table order (bottom first): the backticked `name/` at the start of each
// row's first cell.
std::vector<std::string> layer_order(const std::string& design) {
  std::vector<std::string> order;
  std::istringstream in(design);
  std::string line;
  bool in_section = false;
  const std::regex row(R"(^\|\s*`([a-z_]+)/`)");
  while (std::getline(in, line)) {
    if (line.rfind("## ", 0) == 0) in_section = line.rfind("## Layers", 0) == 0;
    std::smatch m;
    if (in_section && std::regex_search(line, m, row)) order.push_back(m[1]);
  }
  return order;
}

// The folder of a path below src/ ("kernels/cpu/ops.cc" -> "kernels"); "" for a file directly in src/.
std::string folder_of(const std::string& rel) {
  const size_t slash = rel.find('/');
  return slash == std::string::npos ? "" : rel.substr(0, slash);
}

// Each `#include "a/..."` of `text` (the file `rel`, relative to src/) whose folder `a` lies above rel's folder in
// `order`, as "rel:line: includes a/... (a is above f)". Includes whose first part is not a layer (same-folder
// "x.h", third-party paths) are not layer edges and are skipped. A file in a folder missing from `order` is one
// violation: the table must name every folder.
std::vector<std::string> upward_includes(const std::vector<std::string>& order, const std::string& rel,
                                         const std::string& text) {
  std::vector<std::string> out;
  auto rank = [&](const std::string& f) {
    auto it = std::find(order.begin(), order.end(), f);
    return it == order.end() ? -1 : int(it - order.begin());
  };
  const std::string self = folder_of(rel);
  const int self_rank = rank(self);
  if (self_rank < 0) {
    out.push_back(rel + ":1: folder '" + self + "' is not in docs/DESIGN.md's layer table");
    return out;
  }
  const std::regex inc(R"(^\s*#\s*include\s*"([^"]+)\")");
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    std::smatch m;
    if (!std::regex_search(line, m, inc)) continue;
    const std::string target = m[1];
    const int r = rank(folder_of(target));
    if (r > self_rank)
      out.push_back(rel + ":" + std::to_string(n) + ": includes " + target + " (" + folder_of(target) +
                    " is above " + self + ")");
  }
  return out;
}

std::vector<std::string> design_order() {
  return layer_order(read_text(dlx::test::source_path("docs/DESIGN.md")));
}

}  // namespace

TEST(Layers, TableNamesTheLayersInOrder) {
  const std::vector<std::string> order = design_order();
  ASSERT_GE(order.size(), 3u) << "no layer table found in docs/DESIGN.md";
  EXPECT_EQ(order.front(), "core");
  EXPECT_EQ(order.back(), "cli");
}

// The checker itself on synthetic files: an upward include is reported with its line, downward and same-folder
// includes are not, and a folder missing from the table is reported.
TEST(Layers, CheckerFindsAnUpwardInclude) {
  const std::vector<std::string> order = {"core", "kernels", "engine", "cli"};
  const std::string bad = "// a kernel\n#include <vector>\n#include \"core/error.h\"\n#include \"engine/sampling.h\"\n";
  const std::vector<std::string> v = upward_includes(order, "kernels/row_sampling.cc", bad);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0], "kernels/row_sampling.cc:4: includes engine/sampling.h (engine is above kernels)");
  EXPECT_TRUE(upward_includes(order, "engine/generate.cc",
                              "#include \"engine/sampling.h\"\n#include \"kernels/backend.h\"\n#include \"x.h\"\n")
                  .empty());
  EXPECT_EQ(upward_includes(order, "tools/x.cc", "#include \"core/error.h\"\n").size(), 1u);
  EXPECT_EQ(upward_includes(order, "core/x.cc", "  #  include \"cli/commands.h\"\n").size(), 1u);
}

TEST(Layers, NoUpwardIncludesInSrc) {
  const std::vector<std::string> order = design_order();
  const fs::path src = dlx::test::source_path("src");
  std::vector<std::string> violations;
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(src)) {
    const std::string ext = e.path().extension().string();
    if (!e.is_regular_file() || (ext != ".h" && ext != ".cc" && ext != ".cu" && ext != ".cuh")) continue;
    ++files;
    const std::string rel = fs::relative(e.path(), src).generic_string();
    for (const std::string& v : upward_includes(order, rel, read_text(e.path()))) violations.push_back(v);
  }
  EXPECT_GT(files, 100);
  std::sort(violations.begin(), violations.end());
  std::string all;
  for (const std::string& v : violations) all += v + "\n";
  EXPECT_TRUE(violations.empty()) << "includes against the layer order of docs/DESIGN.md:\n" << all;
}
