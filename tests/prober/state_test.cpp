#include <gtest/gtest.h>

#include <fstream>

#include "prober/boot_epoch.h"
#include "prober/spool.h"
#include "test_util.h"

namespace flexmon::prober {
namespace {

TEST(BootEpoch, StartsAtOneAndIncrementsAcrossRestarts) {
  test::TempDir dir;
  auto node_dir = dir.path / "state" / "n1";
  EXPECT_EQ(next_boot_epoch(node_dir), 1u);
  EXPECT_EQ(next_boot_epoch(node_dir), 2u);
  EXPECT_EQ(next_boot_epoch(node_dir), 3u);
  std::ifstream in(node_dir / "boot_epoch");
  std::uint64_t stored = 0;
  in >> stored;
  EXPECT_EQ(stored, 3u);
  EXPECT_FALSE(std::filesystem::exists(node_dir / "boot_epoch.tmp"));
}

TEST(BootEpoch, GarbageInTheFileIsAnErrorNamingIt) {
  test::TempDir dir;
  std::ofstream(dir.path / "boot_epoch") << "twelve\n";
  try {
    next_boot_epoch(dir.path);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("boot_epoch"), std::string::npos) << e.what();
  }
}

TEST(MemorySpool, KeepsOrderErasesRangesAndIsBounded) {
  MemorySpool spool(3);
  EXPECT_TRUE(spool.put({1, 1}, "a"));
  EXPECT_TRUE(spool.put({1, 2}, "b"));
  EXPECT_TRUE(spool.put({2, 1}, "c"));
  EXPECT_FALSE(spool.put({2, 2}, "d")) << "full";
  EXPECT_EQ(spool.size(), 3u);
  std::string seen;
  spool.scan({1, 2}, [&](SpoolKey, const std::string& r) {
    seen += r;
    return true;
  });
  EXPECT_EQ(seen, "bc") << "in (epoch, seq) order, across epochs";
  EXPECT_EQ(spool.erase(1, 2, 100), 1u);
  EXPECT_EQ(spool.erase(1, 5, 1), 0u) << "inverted range";
  EXPECT_EQ(spool.size(), 2u);
  EXPECT_TRUE(spool.put({2, 2}, "d"));
}

}  // namespace
}  // namespace flexmon::prober
