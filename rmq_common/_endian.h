/* Big-endian loads and stores for the stored-record layout (RocketMQ writes Java's ByteBuffer order). */
#ifndef RMQ_ENDIAN_H
#define RMQ_ENDIAN_H
#include <stdint.h>
#include <string.h>

static inline void rmq_put_i16(unsigned char *p, int16_t v) { uint16_t u = __builtin_bswap16((uint16_t)v); memcpy(p, &u, 2); }
static inline void rmq_put_i32(unsigned char *p, int32_t v) { uint32_t u = __builtin_bswap32((uint32_t)v); memcpy(p, &u, 4); }
static inline void rmq_put_i64(unsigned char *p, int64_t v) { uint64_t u = __builtin_bswap64((uint64_t)v); memcpy(p, &u, 8); }
static inline int16_t rmq_get_i16(const unsigned char *p) { uint16_t u; memcpy(&u, p, 2); return (int16_t)__builtin_bswap16(u); }
static inline int32_t rmq_get_i32(const unsigned char *p) { uint32_t u; memcpy(&u, p, 4); return (int32_t)__builtin_bswap32(u); }
static inline int64_t rmq_get_i64(const unsigned char *p) { uint64_t u; memcpy(&u, p, 8); return (int64_t)__builtin_bswap64(u); }
static inline void rmq_prefetch_w(const void *p) { __builtin_prefetch(p, 1, 1); }
#endif
