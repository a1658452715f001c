// Where a gateway listens: what ServiceHost and Channel dial.
#ifndef STELLA_SERVICE_SDK_GATEWAY_ADDRESS_H_
#define STELLA_SERVICE_SDK_GATEWAY_ADDRESS_H_

#include <cstdint>
#include <string>

namespace stella::sdk {

struct GatewayAddress {
  std::string host;
  // The gateway's service listener (9501) for a ServiceHost, its caller listener (9502) for a
  // Channel.
  std::uint16_t port = 0;
};

}  // namespace stella::sdk

#endif  // STELLA_SERVICE_SDK_GATEWAY_ADDRESS_H_
