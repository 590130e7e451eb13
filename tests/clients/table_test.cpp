#include "clients/table.h"

#include <gtest/gtest.h>

#include <sstream>

namespace flexmon {
namespace {

TEST(Table, AlignsColumns) {
  Table table({"SRC", "DST", "STATUS"});
  table.add({"n1", "node-two", "ok"});
  table.add({"n10", "n2"});  // a short row is padded
  std::ostringstream out;
  table.print(out);
  EXPECT_EQ(out.str(),
            "SRC  DST       STATUS\n"
            "n1   node-two  ok\n"
            "n10  n2        \n");
}

}  // namespace
}  // namespace flexmon
