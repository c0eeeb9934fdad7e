// Stand-in for Gloo's context.h (see README.md): c10d's header only names the type.
#pragma once
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo
