#include "service/session_proto.h"

#include <google/protobuf/util/time_util.h>

namespace gistmem::service {

v1::Session ToSessionProto(const store::SessionRecord& record) {
  using google::protobuf::util::TimeUtil;
  v1::Session session;
  session.set_session_id(record.session_id());
  session.set_model(record.model_fingerprint());
  *session.mutable_policy() = record.policy();
  session.set_system_prompt(record.system_prompt());
  *session.mutable_default_sampling() = record.default_sampling();
  session.mutable_labels()->insert(record.labels().begin(), record.labels().end());
  *session.mutable_create_time() = TimeUtil::MicrosecondsToTimestamp(record.create_time_micros());
  *session.mutable_update_time() = TimeUtil::MicrosecondsToTimestamp(record.update_time_micros());
  session.set_turns(record.turn_count());
  session.set_stream_tokens(record.stream_tokens());
  return session;
}

}  // namespace gistmem::service
