/* Identifiers: UUIDv7 (time-ordered, for B-tree locality) as lowercase text, and partitioning. */
#ifndef WH_IDS_H
#define WH_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ID_LEN 36 /* "xxxxxxxx-xxxx-7xxx-yxxx-xxxxxxxxxxxx" */

/* Writes a new UUIDv7 (48-bit unix ms, version 7, a 12-bit counter within the millisecond,
 * variant 10, 62 random bits from RAND_bytes, buffered) and a NUL into out (ID_LEN + 1 bytes):
 * each id of the process is greater than the one before. Aborts if the RNG fails. */
void id_new(char *out);

/* Canonical 8-4-4-4-12 hex UUID of exactly ID_LEN bytes (either case). */
bool id_valid(const char *s, size_t n);

/* Copies a valid id into out lowercased (ID_LEN + 1 bytes). */
void id_normalize(const char *s, char *out);

/* The smallest id of the first whole millisecond at or after us (µs since 1970, >= 0): its
 * 48-bit time ceil(us / 1000), every other bit zero, into out (ID_LEN + 1 bytes). A search's
 * bound on the ids' times: "made at or after t" is id >= id_at(t), "before t" id < id_at(t);
 * the SQL wh_uuid_at() of common/schema.c computes the same. */
void id_at(int64_t us, char *out);

/* The millisecond (since 1970) in a UUIDv7's first 48 bits; -1 when s does not start with
 * 8 hex digits, '-', 4 hex digits. */
int64_t id_time_ms(const char *s);

/* Partition of a subscription: FNV-1a 32-bit over the id's ID_LEN text bytes, mod nparts. */
uint32_t id_partition(const char *id, uint32_t nparts);

/* Fast non-cryptographic random (jitter), seeded from RAND_bytes on first use. */
uint32_t id_rand32(void);

#endif
