// Stand-in for Gloo's transport/device.h (see README.md): the types are only held by pointer.
#pragma once

namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
} // namespace transport
} // namespace gloo
