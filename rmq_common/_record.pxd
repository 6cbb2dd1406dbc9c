# C-level declarations of the stored-record codec, shared by rmq_store's Cython modules.
#
# Stored record, v1 layout with IPv4 hosts (PROTOCOL.md §4.1). All integers big-endian.
#
#   off  size  field
#     0     4  TOTALSIZE            (includes itself)
#     4     4  MAGICCODE            0xDAA320A7 (v1); 0xCBD43194 marks a BLANK file tail
#     8     4  BODYCRC              crc32(body) & 0x7FFFFFFF
#    12     4  QUEUEID
#    16     4  FLAG
#    20     8  QUEUEOFFSET          index in the consume queue
#    28     8  PHYSICALOFFSET       global commitlog offset of this record
#    36     4  SYSFLAG
#    40     8  BORNTIMESTAMP
#    48   8|20 BORNHOST             ip + int32 port (20 bytes when SYSFLAG & 0x10)
#    56     8  STORETIMESTAMP       (offsets below shift by 12 per IPv6 host)
#    64   8|20 STOREHOST            (20 bytes when SYSFLAG & 0x20)
#    72     4  RECONSUMETIMES
#    76     8  PREPARED TX OFFSET
#    84   4+n  BODY                 int32 length + bytes
#         1+t  TOPIC                int8 length + UTF-8
#         2+p  PROPERTIES           int16 length + property string
#
# BLANK tail: TOTALSIZE = bytes left in the file, MAGICCODE = 0xCBD43194, written when the
# next record plus END_FILE_MIN_BLANK_LENGTH does not fit.
#
# Batch body item (PROTOCOL.md §4.6): the body of SEND_BATCH_MESSAGE (320), and of SEND_MESSAGE
# (10/310) with batch=true/"1", is items concatenated as MessageDecoder.encodeMessage writes them
# (Java, rocketmq-client-cpp BatchMessage::encode and Go Message.Marshal alike). Big-endian.
#
#   off    size  field
#     0       4  TOTALSIZE          22 + n + p (includes itself); checked here, ignored by R4
#     4       4  MAGICCODE          0; ignored (R4 reads and drops it)
#     8       4  BODYCRC            0; ignored (the broker computes the stored record's CRC)
#    12       4  FLAG               the item's user flag -> stored FLAG
#    16     4+n  BODY               int32 length + bytes
#  20+n     2+p  PROPERTIES         int16 length + property string of the item (its UNIQ_KEY etc.)
#
# Each item becomes one stored record (above): FLAG, BODY as is; stored PROPERTIES = the item's
# string, then U+0002 if the item's string is non-empty and does not already end with one, then the
# batch header's properties and CLUSTER (R4 CommitLog batch encoder, needAppendLastPropertySeparator).

from libc.stdint cimport int16_t, int32_t, int64_t, uint32_t

cdef extern from "_endian.h" nogil:
    void rmq_put_i16(unsigned char *p, int16_t v)
    void rmq_put_i32(unsigned char *p, int32_t v)
    void rmq_put_i64(unsigned char *p, int64_t v)
    int16_t rmq_get_i16(const unsigned char *p)
    int32_t rmq_get_i32(const unsigned char *p)
    int64_t rmq_get_i64(const unsigned char *p)
    void rmq_prefetch_w(const void *p)

cdef extern from "zlib.h" nogil:
    unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int length)

cdef extern from "_crc32.h" nogil:
    uint32_t rmq_crc32(const unsigned char *buf, size_t length)
    void rmq_crc32_set_simd(int on)

cdef enum:
    MAGIC_V1 = <int32_t>0xDAA320A7
    MAGIC_V2 = <int32_t>0xDAA320AB
    MAGIC_BLANK = <int32_t>0xCBD43194
    END_FILE_MIN_BLANK_LENGTH = 8
    OFF_TOTALSIZE = 0
    OFF_MAGIC = 4
    OFF_BODYCRC = 8
    OFF_QUEUEID = 12
    OFF_FLAG = 16
    OFF_QUEUEOFFSET = 20
    OFF_PHYOFFSET = 28
    OFF_SYSFLAG = 36
    OFF_BORNTIMESTAMP = 40
    OFF_BORNHOST = 48
    SYSFLAG_BORNHOST_V6 = 0x10
    SYSFLAG_STOREHOST_V6 = 0x20
    SYSFLAG_TX_MASK = 0xC
    SYSFLAG_TX_PREPARED = 0x4
    SYSFLAG_TX_ROLLBACK = 0xC
    HOST_V4_LEN = 8
    HOST_V6_LEN = 20
    # Fixed part of a record with IPv4 hosts: everything but body, topic and properties bytes.
    RECORD_FIXED_V4 = 84 + 4 + 1 + 2
    # The same for a v2 record (MAGIC_V2, RocketMQ 5.x): its topic length takes 2 bytes instead of 1.
    RECORD_FIXED_V2 = 84 + 4 + 2 + 2
    MAX_TOPIC_LENGTH_V1 = 127
    MAX_PROPERTIES_LENGTH = 32767
    # Batch body items (drawing above).
    BATCH_OFF_TOTALSIZE = 0
    BATCH_OFF_MAGIC = 4
    BATCH_OFF_BODYCRC = 8
    BATCH_OFF_FLAG = 12
    BATCH_OFF_BODYLEN = 16
    BATCH_OFF_BODY = 20
    BATCH_ITEM_FIXED = 4 + 4 + 4 + 4 + 4 + 2
    # Defaults of decode/encode_batch_body: RocketMQ's maxMessageSize (4 MiB) per body, and an item
    # count above what a 4.9 broker with that maxMessageSize can store from one batch (about 45,000).
    BATCH_DEFAULT_MAX_BODY = 4 * 1024 * 1024
    BATCH_DEFAULT_MAX_ITEMS = 65536
    # Largest max_body whose items still fit TOTALSIZE (int32) with the largest property string.
    BATCH_MAX_BODY_LIMIT = 0x7FFFFFFF - BATCH_ITEM_FIXED - MAX_PROPERTIES_LENGTH

# Positions of the variable fields of one record, computed from its SYSFLAG.
cdef struct RecordView:
    int32_t total_size
    int32_t magic
    int32_t body_crc
    int32_t queue_id
    int32_t flag
    int64_t queue_offset
    int64_t phy_offset
    int32_t sys_flag
    int64_t born_timestamp
    int64_t store_timestamp
    int32_t reconsume_times
    int64_t prepared_tx_offset
    int32_t born_host_off
    int32_t born_host_len
    int32_t store_host_off
    int32_t store_host_len
    int32_t body_off
    int32_t body_len
    int32_t topic_off
    int32_t topic_len
    int32_t props_off
    int32_t props_len

# Where TAGS, KEYS and UNIQ_KEY values sit inside a property string (length -1 = absent).
cdef struct PropertyScan:
    int32_t tags_off
    int32_t tags_len
    int32_t keys_off
    int32_t keys_len
    int32_t uniq_off
    int32_t uniq_len
    int32_t delay_off
    int32_t delay_len

# Positions of the fields of one batch body item, relative to the item's first byte.
cdef struct BatchItemView:
    int32_t total_size      # the TOTALSIZE field as sent
    int32_t flag
    int32_t body_off
    int32_t body_len
    int32_t props_off
    int32_t props_len

# Results of parse_batch_item (checked in this order).
cdef enum:
    BATCH_ITEM_OK = 1
    BATCH_ITEM_SHORT = -1           # fewer than BATCH_ITEM_FIXED bytes left
    BATCH_ITEM_NEG_BODY = -2        # bodyLen < 0
    BATCH_ITEM_BODY_TOO_LARGE = -3  # bodyLen > max_body
    BATCH_ITEM_BODY_PAST_END = -4   # body or the properties length field runs past the data
    BATCH_ITEM_NEG_PROPS = -5       # propertiesLen < 0
    BATCH_ITEM_PROPS_PAST_END = -6  # property string runs past the data
    BATCH_ITEM_BAD_TOTALSIZE = -7   # TOTALSIZE != 22 + bodyLen + propertiesLen

# Results of validate_record.
cdef enum:
    RECORD_OK = 1
    RECORD_BLANK = 2
    RECORD_END = 0          # zero TOTALSIZE: nothing was ever written here
    RECORD_BAD_MAGIC = -1
    RECORD_BAD_SIZE = -2
    RECORD_BAD_CRC = -3
    RECORD_BAD_OFFSET = -4
    RECORD_TRUNCATED = -5

cdef int32_t masked_crc32(const unsigned char *p, Py_ssize_t n) noexcept nogil
cdef int32_t java_hash_utf8(const unsigned char *p, Py_ssize_t n, int32_t h) noexcept nogil
cdef int32_t index_hash(int32_t java_hash) noexcept nogil
cdef int parse_record(const unsigned char *p, Py_ssize_t avail, RecordView *rv) noexcept nogil
cdef int parse_record_any(const unsigned char *p, Py_ssize_t avail, RecordView *rv) noexcept nogil
cdef int validate_record(const unsigned char *p, Py_ssize_t avail, int64_t expect_phy,
                         bint check_crc, RecordView *rv) noexcept nogil
cdef void scan_properties(const unsigned char *p, Py_ssize_t n, PropertyScan *out) noexcept nogil
cdef Py_ssize_t record_length(Py_ssize_t body_len, Py_ssize_t topic_len, Py_ssize_t props_len,
                              Py_ssize_t born_host_len, Py_ssize_t store_host_len) noexcept nogil
cdef Py_ssize_t write_record(unsigned char *dst, int32_t total_size, int32_t body_crc, int32_t queue_id,
                             int32_t flag, int64_t queue_offset, int64_t phy_offset, int32_t sys_flag,
                             int64_t born_ts, const unsigned char *born_host, int32_t born_host_len,
                             int64_t store_ts, const unsigned char *store_host, int32_t store_host_len,
                             int32_t reconsume_times, int64_t prepared_tx_offset,
                             const unsigned char *body, int32_t body_len,
                             const unsigned char *topic, int32_t topic_len,
                             const unsigned char *props, int32_t props_len) noexcept nogil
cdef int parse_batch_item(const unsigned char *p, Py_ssize_t avail, Py_ssize_t max_body,
                          BatchItemView *it) noexcept nogil
cdef Py_ssize_t merged_properties_length(const unsigned char *props, Py_ssize_t props_len,
                                         Py_ssize_t extra_len) noexcept nogil
cdef Py_ssize_t write_merged_properties(unsigned char *dst, const unsigned char *props, Py_ssize_t props_len,
                                        const unsigned char *extra, Py_ssize_t extra_len) noexcept nogil
cdef Py_ssize_t write_batch_item(unsigned char *dst, int32_t flag, const unsigned char *body, int32_t body_len,
                                 const unsigned char *props, int32_t props_len) noexcept nogil
