/* libicudata.so.72 without the data (31 MB), for bench/gpu/pack-service.sh's bundle only: ICU's
 * own "stubdata" (an empty table of contents). The server calls ICU for the tokenizer's
 * character classes (u_charType, White_Space, Alphabetic, Join_Control), which libicuuc holds
 * compiled in, and for NFC only when a tokenizer.json asks for it (ours do not; it would fail
 * loudly: "ICU NFC normalizer unavailable"). */
#include <stdint.h>

struct IcuDataHeader {
  uint16_t header_size;
  uint8_t magic1, magic2;
  struct {
    uint16_t size, reserved_word;
    uint8_t is_big_endian, charset_family, sizeof_uchar, reserved_byte;
    uint8_t data_format[4], format_version[4], data_version[4];
  } info;
  char padding[8];
  uint32_t count, reserved;
  struct { uint32_t name_offset, data_offset; } toc[1];
};

__attribute__((visibility("default"))) const struct IcuDataHeader icudt72_dat = {
    32, 0xda, 0x27,
    {20, 0, 0 /* little-endian */, 0 /* ASCII */, 2, 0, {0x54, 0x6f, 0x43, 0x50} /* "ToCP" */,
     {1, 0, 0, 0}, {0, 0, 0, 0}},
    {0}, 0, 0, {{0, 0}}};
