// Request parsing and validation, as the service does it: a request arrives as bytes, is parsed
// with service/grpc_codec.h ParseRequest (INVALID_ARGUMENT when it does not parse), then its
// fields are checked: ids (store/ids.h), page tokens, roles and message text (TurnTokens with
// the shipped model's tokenizer and chat template), memory policies (PolicyResolver with the
// model's gist_config.json) and sampling (service/sampling_options.h; what passes must make a
// Sampler that samples). Checks answer INVALID_ARGUMENT (policies: also FAILED_PRECONDITION),
// never crash, and a parsed request serializes back to one that parses the same.
//
// Input: a byte choosing the request type, then the serialized request (whose bytes also make
// the row of logits the sampler is tried on).
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gistmem/v1/gistmem.pb.h"
#include "model/sampling.h"
#include "service/config.h"
#include "service/grpc_codec.h"
#include "service/policy_resolver.h"
#include "service/sampling_options.h"
#include "service/turn_tokens.h"
#include "store/ids.h"
#include "store/page_token.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using gistmem::fuzz::Fail;
namespace service = gistmem::service;
namespace store = gistmem::store;
namespace v1 = gistmem::v1;

void Expect(const absl::Status& status, std::string_view what,
            absl::StatusCode also = absl::StatusCode::kInvalidArgument) {
  if (!status.ok() && status.code() != absl::StatusCode::kInvalidArgument &&
      status.code() != also) {
    Fail(std::string(what) + ": " + status.ToString());
  }
}

const service::TurnTokens& Turns() {
  static const service::TurnTokens turns(gistmem::fuzz::Tokenizer(), gistmem::fuzz::Config());
  return turns;
}

const service::PolicyResolver& Policies() {
  static const service::PolicyResolver resolver({}, gistmem::fuzz::Gist());
  return resolver;
}

void CheckId(const std::string& id, std::string_view what) {
  if (!id.empty()) Expect(store::ValidateId(what, id), "ValidateId");
}

void CheckPolicy(const v1::MemoryPolicy& requested) {
  absl::StatusOr<gistmem::memory::Policy> policy = Policies().Resolve(requested);
  Expect(policy.status(), "PolicyResolver::Resolve", absl::StatusCode::kFailedPrecondition);
  if (!policy.ok()) return;
  if (!gistmem::memory::Validate(*policy).ok()) Fail("resolved a policy that does not validate");
  // What is stored is read back the same.
  absl::StatusOr<gistmem::memory::Policy> stored =
      Policies().FromStored(service::PolicyResolver::ToProto(*policy));
  if (!stored.ok() || !(*stored == *policy)) Fail("a resolved policy does not read back");
}

void CheckMessage(const v1::Message& message) {
  absl::StatusOr<std::string_view> role = service::NormalizeRole(message.role());
  Expect(role.status(), "NormalizeRole");
  if (!role.ok()) return;
  absl::StatusOr<std::vector<int32_t>> tokens = Turns().Message(*role, message.content());
  Expect(tokens.status(), "TurnTokens::Message");
  if (tokens.ok()) {
    for (int32_t id : *tokens) {
      if (id < 0 || id >= gistmem::fuzz::Tokenizer().vocab_size()) Fail("token id out of range");
    }
  }
}

// `logits_from`: bytes to make a row of logits from.
void CheckSampling(const v1::SamplingParams& defaults, const v1::SamplingParams& overrides,
                   std::string_view logits_from) {
  service::Limits limits;
  Expect(service::ValidateSamplingDefaults(defaults, limits), "ValidateSamplingDefaults");
  absl::StatusOr<service::TurnSampling> sampling =
      service::ResolveSampling(defaults, overrides, limits);
  Expect(sampling.status(), "ResolveSampling");
  if (!sampling.ok()) return;
  if (sampling->max_tokens < 1 || sampling->max_tokens > limits.max_new_tokens) {
    Fail("max_tokens out of range passed");
  }
  if (!sampling->params.Validate().empty()) Fail("resolved sampling does not validate");
  std::optional<gistmem::model::Sampler> sampler;
  try {
    sampler.emplace(sampling->params);
  } catch (const std::invalid_argument& error) {
    Fail(std::string("Sampler refused resolved params: ") + error.what());
  }
  std::vector<float> logits(64);
  for (size_t i = 0; i < logits.size(); ++i) {
    const unsigned char byte = i < logits_from.size() ? logits_from[i] : 0;
    logits[i] = (static_cast<float>(byte) - 128.f) / 4.f;
  }
  const int32_t previous[] = {1, 3, 5, 63, 64, -1};
  for (int step = 0; step < 3; ++step) {
    const int32_t id = sampler->Sample(logits, previous);
    if (id < 0 || id >= static_cast<int32_t>(logits.size())) Fail("sampled id out of range");
  }
}

template <typename Message>
std::optional<Message> Parse(std::string_view bytes) {
  grpc::Slice slice(bytes.data(), bytes.size());
  grpc::ByteBuffer buffer(&slice, 1);
  absl::StatusOr<Message> message = service::ParseRequest<Message>(buffer);
  if (!message.ok()) {
    if (message.status().code() != absl::StatusCode::kInvalidArgument) {
      Fail("ParseRequest: " + message.status().ToString());
    }
    return std::nullopt;
  }
  // A parsed request serializes to one that parses to the same message.
  const grpc::ByteBuffer again = service::SerializeMessage(*message);
  absl::StatusOr<Message> reparsed = service::ParseRequest<Message>(again);
  if (!reparsed.ok() || gistmem::fuzz::Canonical(*reparsed) != gistmem::fuzz::Canonical(*message)) {
    Fail("a parsed request does not survive serialize/parse");
  }
  return *message;
}

void Request(uint8_t type, std::string_view bytes) {
  switch (type % 9) {
    case 0:
      if (auto r = Parse<v1::CreateSessionRequest>(bytes)) {
        CheckId(r->session_id(), "session id");
        CheckPolicy(r->policy());
        CheckSampling(r->default_sampling(), {}, bytes);
        Expect(Turns().SessionStart(r->system_prompt()).status(), "TurnTokens::SessionStart");
      }
      break;
    case 1:
      if (auto r = Parse<v1::GenerateRequest>(bytes)) {
        CheckId(r->session_id(), "session id");
        if (r->has_message()) CheckMessage(r->message());
        CheckSampling({}, r->sampling(), bytes);
      }
      break;
    case 2:
      if (auto r = Parse<v1::ChatRequest>(bytes)) {
        CheckId(r->session_id(), "session id");
        if (r->has_turn()) {
          CheckMessage(r->turn().message());
          CheckSampling({}, r->turn().sampling(), bytes);
        }
      }
      break;
    case 3:
      if (auto r = Parse<v1::AppendRequest>(bytes)) {
        CheckId(r->session_id(), "session id");
        CheckMessage(r->message());
      }
      break;
    case 4:
      if (auto r = Parse<v1::PutDocumentRequest>(bytes)) {
        CheckPolicy(r->policy());
        v1::Message message;
        message.set_role(r->role());
        message.set_content(r->text());
        CheckMessage(message);
      }
      break;
    case 5:
      if (auto r = Parse<v1::ListSessionsRequest>(bytes)) {
        if (!r->page_token().empty()) {
          absl::StatusOr<std::string> last = store::DecodePageToken(r->page_token());
          Expect(last.status(), "DecodePageToken");
          // Hex digits are accepted in either case; EncodePageToken writes lower case.
          if (last.ok() &&
              !absl::EqualsIgnoreCase(store::EncodePageToken(*last), r->page_token())) {
            Fail("a page token that decodes does not encode back");
          }
        }
      }
      break;
    case 6:
      if (auto r = Parse<v1::ForkSessionRequest>(bytes)) {
        CheckId(r->session_id(), "session id");
        CheckId(r->new_session_id(), "new session id");
      }
      break;
    case 7:
      if (auto r = Parse<v1::AttachDocumentRequest>(bytes)) {
        CheckId(r->session_id(), "session id");
        CheckId(r->document_id(), "document id");
      }
      break;
    default:
      (void)Parse<v1::GetSessionStatsRequest>(bytes);
      (void)Parse<v1::DeleteSessionRequest>(bytes);
      (void)Parse<v1::GetDocumentRequest>(bytes);
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Request(data[0], std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  return 0;
}
