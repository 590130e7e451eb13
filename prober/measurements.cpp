#include "prober/measurements.h"

#include "prober/latency_prober.h"
#include "prober/tools.h"
#include "wire.pb.h"

namespace flexmon::prober {

Measurements::Measurements(EventLoop& loop, const std::string& source_address,
                           const std::string& node, const std::string& key, unsigned worker_threads)
    : loop_(loop), latency_(std::make_unique<LatencyProber>(loop, source_address, node)) {
  ToolContext context;
  context.node = node;
  context.key = key;
  context.source_address = source_address;
  tools_ = std::make_unique<ToolRunner>(std::move(context), worker_threads);
}

// Workers stop first (joined), so no result is posted to a dead loop.
Measurements::~Measurements() { tools_.reset(); }

void Measurements::measure(const wire::Stream& stream, Done done) {
  if (stream.tool() == "latency" && stream.latency().method() == "udp" && stream.netns().empty()) {
    latency_->measure(stream, std::move(done));
    return;
  }
  tools_->measure(stream, [this, done = std::move(done)](wire::Result result) {
    loop_.post([done, result = std::move(result)]() mutable { done(std::move(result)); });
  });
}

}  // namespace flexmon::prober
