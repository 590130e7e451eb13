#include "prober/measurements.h"

#include "common/clock.h"
#include "common/tool.h"
#include "prober/latency_prober.h"
#include "prober/tools.h"
#include "wire.pb.h"

namespace flexmon::prober {

Measurements::Measurements(EventLoop& loop, const std::string& source_address,
                           const std::string& node, const std::string& key, unsigned worker_threads,
                           OutageOptions outage)
    : loop_(loop), latency_(std::make_unique<LatencyProber>(loop, source_address, node)) {
  ToolContext context;
  context.node = node;
  context.key = key;
  context.source_address = source_address;
  context.outage = outage;
  tools_ = std::make_unique<ToolRunner>(std::move(context), worker_threads);
}

// Workers stop first (joined), so no result is posted to a dead loop.
Measurements::~Measurements() { tools_.reset(); }

void Measurements::measure(std::shared_ptr<const wire::Stream> stream, MonoTime due, Done done) {
  if (parse_tool(stream->tool()) == Tool::kLatency && stream->latency().method() == "udp" &&
      stream->netns().empty()) {
    // A result that lost every probe is followed by the outage probing (on a
    // worker: it blocks), then handed back on the loop.
    const wire::Stream& s = *stream;
    latency_->measure(
        s, due,
        [this, stream = std::move(stream), done = std::move(done)](wire::Result result) mutable {
          if ((result.status() == wire::TIMEOUT || result.status() == wire::UNREACHABLE) &&
              result.latency().sent() > 0 && result.latency().received() == 0) {
            tools_->follow_outage(*stream, std::move(result), [this, done](wire::Result r) {
              loop_.post([done, r = std::move(r)]() mutable { done(std::move(r)); });
            });
            return;
          }
          done(std::move(result));
        });
    return;
  }
  tools_->measure(*stream, [this, done = std::move(done)](wire::Result result) {
    loop_.post([done, result = std::move(result)]() mutable { done(std::move(result)); });
  });
}

void Measurements::measure(const wire::Stream& stream, Done done) {
  measure(std::make_shared<const wire::Stream>(stream), MonoClock::now(), std::move(done));
}

}  // namespace flexmon::prober
