#include "engine/stop_filter.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace expertd::engine {
namespace {

// Feeds pieces one at a time and returns everything released.
std::string Filtered(const std::vector<std::string>& stops, const std::vector<std::string>& pieces, bool* stopped) {
  StopStringFilter filter(stops);
  std::string out;
  for (const std::string& piece : pieces) out += filter.Add(piece);
  out += filter.Flush();
  *stopped = filter.stopped();
  return out;
}

TEST(StopStringFilterTest, NoStopsPassesEverythingAtOnce) {
  StopStringFilter filter({});
  EXPECT_EQ(filter.Add("hello"), "hello");
  EXPECT_EQ(filter.Add(" world"), " world");
  EXPECT_EQ(filter.Flush(), "");
  EXPECT_FALSE(filter.stopped());
}

TEST(StopStringFilterTest, StopSplitAcrossPiecesIsNeverReleased) {
  StopStringFilter filter({"\n\n"});
  EXPECT_EQ(filter.Add("one\n"), "one");  // "\n" may start the stop string
  EXPECT_EQ(filter.Add("\ntwo"), "");
  EXPECT_TRUE(filter.stopped());
  EXPECT_EQ(filter.Add("more"), "");
  EXPECT_EQ(filter.Flush(), "");
}

TEST(StopStringFilterTest, HeldBackTextIsReleasedWhenItCannotMatch) {
  StopStringFilter filter({"END"});
  EXPECT_EQ(filter.Add("the EN"), "the ");
  EXPECT_EQ(filter.Add("ding"), "ENding");
  EXPECT_EQ(filter.Add("E"), "");
  EXPECT_EQ(filter.Flush(), "E");  // the end of generation releases it
  EXPECT_FALSE(filter.stopped());
}

TEST(StopStringFilterTest, EarliestOfSeveralStopsWins) {
  bool stopped = false;
  EXPECT_EQ(Filtered({"cd", "b"}, {"abcdef"}, &stopped), "a");
  EXPECT_TRUE(stopped);
  EXPECT_EQ(Filtered({"xyz", "c"}, {"ab", "cxyz"}, &stopped), "ab");
  EXPECT_EQ(Filtered({"zz"}, {"a", "b", "c"}, &stopped), "abc");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(Filtered({""}, {"a"}, &stopped), "a");  // an empty stop string matches nothing
}

TEST(StopStringFilterTest, StopAtTheVeryStartReleasesNothing) {
  bool stopped = false;
  EXPECT_EQ(Filtered({"Q"}, {"Q: more"}, &stopped), "");
  EXPECT_TRUE(stopped);
}

}  // namespace
}  // namespace expertd::engine
