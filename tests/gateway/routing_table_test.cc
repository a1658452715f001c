#include "gateway/routing_table.h"

#include <map>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/status_matchers.h"

namespace stella::gateway {
namespace {

using ::stella::testing::IsOk;
using ::stella::testing::StatusIs;
using ::testing::HasSubstr;
namespace v1 = ::stella::router::v1;

constexpr char kSayHello[] = "greeter.v1.Greeter/SayHello";

std::shared_ptr<Instance> MakeInstance(std::uint64_t id, std::string region,
                                       const std::vector<std::string>& methods = {kSayHello},
                                       std::string service = "greeter") {
  auto instance = std::make_shared<Instance>();
  instance->connection_id = id;
  instance->service_name = std::move(service);
  instance->instance_id = "i-" + std::to_string(id);
  instance->region = std::move(region);
  for (const std::string& method : methods) {
    v1::Endpoint endpoint;
    endpoint.set_method(method);
    endpoint.set_request_type("greeter.v1.HelloRequest");
    endpoint.set_response_type("greeter.v1.HelloReply");
    instance->endpoints.push_back(endpoint);
  }
  return instance;
}

TEST(RoutingTableTest, UnknownMethodIsNotFoundAndNamed) {
  RoutingTable table;
  RoutingReader reader(table);
  EXPECT_THAT(reader.Pick(kSayHello, ""),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("no service registers the method greeter.v1.Greeter/SayHello")));
}

TEST(RoutingTableTest, PicksSpreadOverInstances) {
  RoutingTable table;
  ASSERT_THAT(table.Add(MakeInstance(1, "eu")), IsOk());
  ASSERT_THAT(table.Add(MakeInstance(2, "us")), IsOk());
  RoutingReader reader(table);
  std::map<std::uint64_t, int> chosen;
  for (int i = 0; i < 1000; ++i) {
    auto instance = reader.Pick(kSayHello, "");
    ASSERT_THAT(instance, IsOk());
    ++chosen[(*instance)->connection_id];
  }
  EXPECT_GT(chosen[1], 100);
  EXPECT_GT(chosen[2], 100);
}

TEST(RoutingTableTest, SameRegionFirstThenAnyLiveInstance) {
  RoutingTable table;
  auto eu = MakeInstance(1, "eu");
  ASSERT_THAT(table.Add(eu), IsOk());
  ASSERT_THAT(table.Add(MakeInstance(2, "us")), IsOk());
  ASSERT_THAT(table.Add(MakeInstance(3, "us")), IsOk());
  RoutingReader reader(table);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ((*reader.Pick(kSayHello, "eu"))->connection_id, 1u);
  }
  eu->draining = true;
  for (int i = 0; i < 100; ++i) {
    EXPECT_NE((*reader.Pick(kSayHello, "eu"))->connection_id, 1u);
  }
}

TEST(RoutingTableTest, PowerOfTwoChoicesPrefersFewerOutstandingCalls) {
  RoutingTable table;
  auto busy = MakeInstance(1, "");
  busy->outstanding = 100;
  ASSERT_THAT(table.Add(busy), IsOk());
  ASSERT_THAT(table.Add(MakeInstance(2, "")), IsOk());
  RoutingReader reader(table);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ((*reader.Pick(kSayHello, ""))->connection_id, 2u);
  }
}

TEST(RoutingTableTest, DrainingAndUnhealthyInstancesAreSkipped) {
  RoutingTable table;
  auto a = MakeInstance(1, "");
  auto b = MakeInstance(2, "");
  ASSERT_THAT(table.Add(a), IsOk());
  ASSERT_THAT(table.Add(b), IsOk());
  RoutingReader reader(table);
  a->healthy = false;
  EXPECT_EQ((*reader.Pick(kSayHello, ""))->connection_id, 2u);
  b->draining = true;
  EXPECT_THAT(reader.Pick(kSayHello, ""),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("method greeter.v1.Greeter/SayHello is registered by 2 "
                                 "instance(s), but none is live")));
}

TEST(RoutingTableTest, RemovedExactlyOnceAndTheMethodGoesWithTheLastInstance) {
  RoutingTable table;
  ASSERT_THAT(table.Add(MakeInstance(1, "")), IsOk());
  ASSERT_THAT(table.Add(MakeInstance(2, "")), IsOk());
  RoutingReader reader(table);
  EXPECT_TRUE(table.Remove(1));
  EXPECT_FALSE(table.Remove(1));
  EXPECT_EQ((*reader.Pick(kSayHello, ""))->connection_id, 2u);
  EXPECT_TRUE(table.Remove(2));
  EXPECT_THAT(reader.Pick(kSayHello, ""), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_TRUE(table.Snapshot()->instances.empty());
}

TEST(RoutingTableTest, RegistrationConflictsAreRefused) {
  RoutingTable table;
  ASSERT_THAT(table.Add(MakeInstance(1, "")), IsOk());
  EXPECT_THAT(table.Add(MakeInstance(1, "")), StatusIs(absl::StatusCode::kAlreadyExists));

  auto other_types = MakeInstance(2, "");
  other_types->endpoints[0].set_response_type("greeter.v2.HelloReply");
  EXPECT_THAT(table.Add(other_types),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("method greeter.v1.Greeter/SayHello is already registered as "
                                 "greeter.v1.HelloRequest -> greeter.v1.HelloReply "
                                 "(CALL_KIND_UNARY)")));

  EXPECT_THAT(table.Add(MakeInstance(3, "", {kSayHello}, "billing")),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("method greeter.v1.Greeter/SayHello is served by service "
                                 "\"greeter\"; service \"billing\" may not register it too")));

  EXPECT_THAT(table.Add(MakeInstance(4, "", {"SayHello"})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is not a full method name")));
  // A refused registration leaves the table as it was.
  EXPECT_EQ(table.Snapshot()->instances.size(), 1u);
}

TEST(RoutingTableTest, ReaderFollowsNewSnapshots) {
  RoutingTable table;
  RoutingReader reader(table);
  EXPECT_EQ(reader.Get().methods.size(), 0u);
  ASSERT_THAT(table.Add(MakeInstance(1, "", {kSayHello, "greeter.v1.Greeter/Chat"})), IsOk());
  EXPECT_EQ(reader.Get().methods.size(), 2u);
  EXPECT_EQ(reader.Get().version, table.version());
}

// Writers change the table while readers pick: under TSan this proves the publication is safe.
// There is always at least one instance registered, so every pick must succeed.
TEST(RoutingTableTest, ConcurrentReadersAndWriter) {
  constexpr int kReaders = 2;
  constexpr int kPicksPerReader = 20'000;
  RoutingTable table;
  ASSERT_THAT(table.Add(MakeInstance(1, "")), IsOk());
  std::vector<std::thread> readers;
  readers.reserve(kReaders);
  std::atomic<int> picks{0};
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&table, &picks] {
      RoutingReader reader(table);
      for (int i = 0; i < kPicksPerReader; ++i) {
        auto instance = reader.Pick(kSayHello, "");
        if (instance.ok()) {
          (*instance)->outstanding.fetch_add(1);
          (*instance)->outstanding.fetch_sub(1);
          picks.fetch_add(1);
        }
      }
    });
  }
  for (std::uint64_t id = 2; id < 500; ++id) {
    ASSERT_THAT(table.Add(MakeInstance(id, id % 2 ? "eu" : "us")), IsOk());
    EXPECT_TRUE(table.Remove(id - 1));
  }
  for (std::thread& t : readers) {
    t.join();
  }
  EXPECT_EQ(picks.load(), kReaders * kPicksPerReader);
  EXPECT_EQ(table.Snapshot()->instances.size(), 1u);
}

}  // namespace
}  // namespace stella::gateway
