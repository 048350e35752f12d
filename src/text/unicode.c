#include "unicode.h"

enum uni_class uni_class_of(uint32_t cp)
{
    if (cp > 0x10FFFF)
        return UNI_OTHER;
    /* The last range whose first code point is <= cp. */
    int lo = 0, hi = unicode_class_ranges_n - 1;
    uint32_t key = (cp << 3) | 7;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (unicode_class_ranges[mid] <= key)
            lo = mid;
        else
            hi = mid - 1;
    }
    return (enum uni_class)(unicode_class_ranges[lo] & 7);
}

bool uni_is_space(uint32_t cp)
{
    if (cp < 0x80)
        return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
    switch (cp) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F:
    case 0x205F: case 0x3000:
        return true;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}

uint32_t utf8_decode(const uint8_t *s, size_t n, size_t *off)
{
    size_t i = *off;
    uint8_t b = s[i];
    if (b < 0x80) {
        *off = i + 1;
        return b;
    }
    int len;
    uint32_t cp;
    if ((b & 0xE0) == 0xC0) {
        len = 2;
        cp = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
        len = 3;
        cp = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
        len = 4;
        cp = b & 0x07;
    } else {
        *off = i + 1;
        return 0xFFFD;
    }
    if (i + (size_t)len > n) {
        *off = i + 1;
        return 0xFFFD;
    }
    for (int k = 1; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80) {
            *off = i + 1;
            return 0xFFFD;
        }
        cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    *off = i + (size_t)len;
    return cp > 0x10FFFF ? 0xFFFD : cp;
}

int utf8_encode(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp > 0x10FFFF)
        cp = 0xFFFD;
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t utf8_valid_prefix(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        int len;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (b >= 0xC2 && b <= 0xDF) {
            len = 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            len = 3;
            if (b == 0xE0)
                lo = 0xA0;
            else if (b == 0xED)
                hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            len = 4;
            if (b == 0xF0)
                lo = 0x90;
            else if (b == 0xF4)
                hi = 0x8F;
        } else {
            return i;
        }
        if (i + (size_t)len > n || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (int k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
        i += (size_t)len;
    }
    return n;
}
