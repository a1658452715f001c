// Micro-benchmarks of the frame codec: encoding REQUEST frames into a reused buffer and decoding
// a stream of them as it would arrive from TLS (16 KiB reads copied into the decoder, as
// SSL_read does). Reports frames/s and bytes/s; `./run bench` runs it.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "benchmark/benchmark.h"
#include "runtime/frame_codec.h"
#include "stella/router/v1/frames.pb.h"

namespace stella::runtime {
namespace {

namespace v1 = ::stella::router::v1;

constexpr std::size_t kTlsRecordSize = 16384;

CorrelationId TestId() {
  CorrelationId id{};
  id[15] = 7;
  return id;
}

v1::Request MakeRequest(std::size_t body_size) {
  v1::Request request;
  request.set_method("bench.v1.Echo/Echo");
  request.set_body(std::string(body_size, 'b'));
  return request;
}

void SetCounters(benchmark::State& state, std::size_t frame_bytes) {
  state.counters["frames/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * frame_bytes));
}

// Serialising a protobuf payload behind its header, as a sender does.
void BM_EncodeMessage(benchmark::State& state) {
  const v1::Request request = MakeRequest(static_cast<std::size_t>(state.range(0)));
  std::string out;
  for (auto _ : state) {
    out.clear();
    absl::Status status = AppendFrame(FrameType::kRequest, kFlagFinal, TestId(), request,
                                      kDefaultMaxPayloadSize, &out);
    benchmark::DoNotOptimize(status);
    benchmark::DoNotOptimize(out.data());
  }
  SetCounters(state, out.size());
}
BENCHMARK(BM_EncodeMessage)->Arg(64)->Arg(16384);

// Framing bytes that are already serialised, as the gateway does when it forwards a payload.
void BM_EncodeBytes(benchmark::State& state) {
  const std::string payload(static_cast<std::size_t>(state.range(0)), 'p');
  const std::span<const std::uint8_t> bytes(reinterpret_cast<const std::uint8_t*>(payload.data()),
                                            payload.size());
  std::string out;
  for (auto _ : state) {
    out.clear();
    absl::Status status =
        AppendFrame(FrameType::kRequest, kFlagFinal, TestId(), bytes, kDefaultMaxPayloadSize, &out);
    benchmark::DoNotOptimize(status);
    benchmark::DoNotOptimize(out.data());
  }
  SetCounters(state, out.size());
}
BENCHMARK(BM_EncodeBytes)->Arg(64)->Arg(16384);

// Feeds a replayed stream of REQUEST frames with `body_size`-byte bodies to a decoder in 16 KiB
// reads; each benchmark iteration yields one frame, handed to `on_frame`, which returns false to
// stop the benchmark with an error.
template <typename OnFrame>
void RunDecode(benchmark::State& state, std::size_t body_size, OnFrame on_frame) {
  const v1::Request request = MakeRequest(body_size);
  std::string wire;
  // About 1 MiB of back-to-back frames (a whole number of them), replayed in a loop.
  while (wire.size() < (1u << 20)) {
    if (!AppendFrame(FrameType::kRequest, kFlagFinal, TestId(), request, kDefaultMaxPayloadSize,
                     &wire)
             .ok()) {
      state.SkipWithError("encoding failed");
      return;
    }
  }
  FrameDecoder decoder;
  std::size_t offset = 0;
  for (auto _ : state) {
    while (true) {
      auto next = decoder.Next();
      if (!next.ok()) {
        state.SkipWithError(std::string(next.status().message()).c_str());
        return;
      }
      if (next->has_value()) {
        if (!on_frame(**next)) {
          state.SkipWithError("the frame's payload did not parse");
          return;
        }
        break;
      }
      const std::size_t n = std::min(kTlsRecordSize, wire.size() - offset);
      std::span<std::uint8_t> room = decoder.PrepareWrite(n);
      std::memcpy(room.data(), wire.data() + offset, n);
      decoder.CommitWrite(n);
      offset = (offset + n) % wire.size();
    }
  }
  SetCounters(state, kFrameHeaderSize + request.ByteSizeLong());
}

// Decoding alone: what the reader pays to find frames in the byte stream.
void BM_Decode(benchmark::State& state) {
  RunDecode(state, static_cast<std::size_t>(state.range(0)), [](const FrameView& frame) {
    benchmark::DoNotOptimize(frame.payload.data());
    return true;
  });
}
BENCHMARK(BM_Decode)->Arg(64)->Arg(16384);

// Decoding plus parsing the Request envelope, which is what a receiver pays per frame.
void BM_DecodeAndParse(benchmark::State& state) {
  v1::Request parsed;
  RunDecode(state, static_cast<std::size_t>(state.range(0)), [&parsed](const FrameView& frame) {
    return parsed.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size()));
  });
}
BENCHMARK(BM_DecodeAndParse)->Arg(64)->Arg(16384);

}  // namespace
}  // namespace stella::runtime

BENCHMARK_MAIN();
