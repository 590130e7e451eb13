// Private to prober/*.cpp: the Asio io_context behind an EventLoop.
#pragma once

#include <boost/asio.hpp>

#include "prober/event_loop.h"

namespace flexmon::prober {

namespace asio = boost::asio;

asio::io_context& io_of(EventLoop& loop);

}  // namespace flexmon::prober
