// Retry delays of the prober's two channels (control: 0.5 s doubling to 10 s;
// results: 0.5 s doubling to 8 s): attempt n waits initial * 2^(n-1), capped
// at max, times a jitter in [0.8, 1.2) so probers that lost the same peer do
// not retry in step. Each caller owns its limits and its random engine.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

namespace flexmon::prober {

struct Backoff {
  double initial_s = 0.5;
  double max_s = 10.0;

  // The delay before attempt `attempt` (1 = the first retry), without jitter.
  double base_s(int attempt) const {
    return std::min(initial_s * std::pow(2.0, std::min(std::max(attempt, 1) - 1, 30)), max_s);
  }
  // The same with the jitter.
  std::chrono::duration<double> delay(int attempt, std::mt19937_64& random) const {
    return std::chrono::duration<double>(base_s(attempt) *
                                         std::uniform_real_distribution<double>(0.8, 1.2)(random));
  }
  // The delays of attempts 1..n together, without jitter.
  double total_s(int n) const {
    double sum = 0;
    for (int i = 1; i <= n; ++i) sum += base_s(i);
    return sum;
  }
};

}  // namespace flexmon::prober
