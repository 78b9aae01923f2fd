"""The items of a write body (POST, PATCH), parsed and checked within a bounded amount of memory.

Parsed JSON takes 15 to 40 times its text as Python objects (`[]` is 2 bytes of
text and 64 of list), so a 10 MiB body parsed at once could take 400 MB. A body
whose parse is small enough is parsed at once. A larger one is first mapped with
whole-text operations (Structure), then parsed at most CHUNK_BYTES of text at a time: every
piece is checked by the same strict parser, items are turned into state text one
piece at a time, and a state whose text alone proves it over the size limit is
never built. Either way the answer is the same: the same first problem, in the
same words, or the same items.
"""

import operator
import re
import secrets
from itertools import accumulate

from marshmallow import ValidationError

import jsoncodec
from schemas import ITEM_FIELDS, first_error

# A whole-body parse is estimated at this many bytes per structural character;
# past WHOLE_PARSE_BYTES estimated, the body is parsed in pieces.
BYTES_PER_TOKEN = 72
WHOLE_PARSE_BYTES = 8 * 1024 * 1024
# Text parsed in one go: a piece ends at the first comma past this many bytes, and
# a child longer than this stands in its parent's piece as a placeholder.
CHUNK_BYTES = 64 * 1024
# A body parsed in pieces may nest this deep, so that a byte holds the depth at each
# position (and 255 can mark a position that is no comma). A state is at level 4 of
# a body ({"states": [{"state": ...}]}): it may nest MAX_STATE_NESTING levels.
MAX_NESTING = 254
MAX_STATE_NESTING = MAX_NESTING - 3
WHITESPACE = b" \t\n\r"
# The next string that holds a bracket, comma or escape: the regex engine skips plain strings itself.
# Every match ends at such a string (group 1), at an unterminated one, or at the end.
# Possessive throughout: a plain repeat would keep a backtracking mark per escape (2 MB of \" took 259 MiB).
MARKED_STRING = re.compile(rb'(?:[^"]++|"[^"\\\[\]{},]*+")*+(?:("[^"\\]*+(?:\\.[^"\\]*+)*+")|"|\Z)', re.DOTALL)
NOT_WHITESPACE = re.compile(rb"[^ \t\n\r]")
OPEN_ARRAY, OPEN_OBJECT = ord("["), ord("{")
# Byte maps: the marks of structure (1 opens, 255 closes, 2 is a comma), then from
# a mark its step in depth (+1, or -1 as a signed byte) and its comma mask (0 at a comma).
MARKS = bytes(1 if byte in b"[{" else 255 if byte in b"]}" else 2 if byte == ord(",") else 0 for byte in range(256))
DEPTH_STEP = bytes(mark if mark in (1, 255) else 0 for mark in range(256))
COMMA_MASK = bytes(0 if mark == 2 else 255 for mark in range(256))
STORED_AS_SENT = tuple(bytes([byte]) for byte in b'[]{},:"')


class Frame:
    """An array or object of the body text, too long to be parsed with its parent's piece."""

    __slots__ = ("open", "start", "end", "depth", "cuts", "kids")

    def __init__(self, open_byte, start, end, depth):
        self.open, self.start, self.end, self.depth = open_byte, start, end, depth
        self.cuts = []  # the commas where its pieces end
        self.kids = []  # the children too long for a piece, in order


def whole_parse_is_small(data, strings_too=True):
    """Whether parsing `data` at once is estimated to take at most WHOLE_PARSE_BYTES (leaving out
    the strings, which take about their text, without `strings_too`)."""
    tokens = data.count(b"[") + data.count(b"{") + data.count(b",") + data.count(b":")
    return tokens * BYTES_PER_TOKEN + (len(data) if strings_too else 0) <= WHOLE_PARSE_BYTES


class TooDeep(jsoncodec.InvalidJSON):
    """The body nests deeper than a body read in pieces may."""


def _invalid(why):
    return jsoncodec.InvalidJSON(why)


class Structure:
    """Where the arrays and objects of a body are, found with whole-text operations, never parsing it.

    With strings blanked out (same length), the nesting depth after each byte
    (`depths`) and the depth of each comma (`commas`, 255 elsewhere) are byte
    strings, so finding a bracket's partner or a container's commas is a find().
    """

    def __init__(self, data):
        self.data = data
        marks = bytearray(data.translate(MARKS))
        for match in MARKED_STRING.finditer(data):
            start, end = match.span(1)
            if start >= 0:
                marks[start:end] = bytes(end - start)  # what a string holds is not structure
        steps = memoryview(marks.translate(DEPTH_STEP)).cast("b")  # 255 is -1 as a signed byte
        try:
            self.depths = bytes(accumulate(steps))  # ValueError below 0 or past 255
        except ValueError:  # below 0: unbalanced; past 255: too deep
            if min(accumulate(steps)) < 0:
                raise _invalid("unbalanced brackets") from None
            raise TooDeep("nested too deep") from None
        if MAX_NESTING + 1 in self.depths:  # 255 marks a position that is no comma
            raise TooDeep("nested too deep")
        del steps
        mask = marks.translate(COMMA_MASK)
        del marks
        self.commas = bytes(map(operator.or_, self.depths, mask))

    def root(self):
        """The outermost array or object, with its big descendants; None for another JSON value."""
        first = NOT_WHITESPACE.search(self.data)
        if first is None or self.data[first.start()] not in (OPEN_ARRAY, OPEN_OBJECT):
            return None
        root = self.frame(first.start())
        if root.end < 0 or NOT_WHITESPACE.search(self.data, root.end + 1):
            raise _invalid("not one complete document")
        return root

    def frame(self, start):
        """The container opening at `start`."""
        depth = self.depths[start]
        end = self.depths.find(depth - 1, start)
        if end >= 0 and self.data[end] != self.data[start] + 2:  # ] follows [ and } follows { in ASCII
            raise _invalid("mismatched brackets")
        return Frame(self.data[start], start, end, depth)

    def big_frames(self, root):
        """Every big frame from `root` down, each with its cuts and kids."""
        frames, pending = [], [root]
        while pending:
            frame = pending.pop()
            self.divide(frame)
            frames.append(frame)
            pending.extend(frame.kids)
        return frames

    def divide(self, frame):
        """Cut the frame into pieces at its own commas, and find its children too long for a piece."""
        position = frame.start + 1
        while frame.end - position > CHUNK_BYTES:
            target = position + CHUNK_BYTES
            comma = self.commas.find(frame.depth, target, frame.end)
            element_end = frame.end if comma < 0 else comma
            element_start = max(position, self.commas.rfind(frame.depth, position, target) + 1)
            if element_end - element_start > CHUNK_BYTES:
                kid = self.container_in(frame.depth, element_start, element_end)
                if kid is not None and kid.end - kid.start > CHUNK_BYTES:
                    frame.kids.append(kid)
            if comma < 0:
                return
            frame.cuts.append(comma)
            position = comma + 1

    def container_in(self, depth, start, end):
        """The array or object that is the value of the element text[start:end] at `depth`, if it is one."""
        opening = self.depths.find(depth + 1, start, end)
        return None if opening < 0 else self.frame(opening)

    def levels(self, frame):
        """How many levels the frame nests, itself being the first."""
        return max(self.depths[frame.start : frame.end + 1]) - frame.depth + 1

    def elements(self, frame):
        """How many elements the array frame holds."""
        if NOT_WHITESPACE.search(self.data, frame.start + 1, frame.end) is None:
            return 0
        return self.commas.count(frame.depth, frame.start, frame.end) + 1

    def brackets(self, frame):
        """The brackets of the frame and everything in it, outside strings."""

        def count(text, start=0, end=None):
            return sum(text.count(bracket, start, end) for bracket in (b"[", b"]", b"{", b"}"))

        strings = MARKED_STRING.finditer(self.data, frame.start, frame.end)
        in_strings = sum(count(match.group(1)) for match in strings if match.group(1) is not None)
        return count(self.data, frame.start, frame.end + 1) - in_strings


class PieceParser:
    """Parses big frames one piece at a time, each child too big for a piece standing in as a placeholder."""

    def __init__(self, data):
        self.data = data
        self.nonce = "botstate-" + secrets.token_hex(16)  # no client can send it

    def pieces(self, frame):
        """Each piece of `frame` parsed: lists for an array, dicts for an object."""
        data, kids = self.data, iter(frame.kids)
        kid = next(kids, None)
        starts = [frame.start + 1] + [comma + 1 for comma in frame.cuts]
        for start, end in zip(starts, frame.cuts + [frame.end], strict=False):
            parts, position = [], start
            while kid is not None and kid.start < end:
                parts += [data[position : kid.start], b'["%s",%d]' % (self.nonce.encode(), id(kid))]
                position = kid.end + 1
                kid = next(kids, None)
            parts.append(data[position:end])
            text = b"".join(parts)
            if frame.cuts and not text.strip(WHITESPACE):  # [1,] or [,1]: an element left empty
                raise _invalid("empty element")
            yield jsoncodec.loads(bytes([frame.open]) + text + bytes([frame.open + 2]))

    def placeholder_of(self, value):
        """The id() of the frame `value` stands for, or None when it is a value of its own."""
        if type(value) is list and len(value) == 2 and value[0] == self.nonce:
            return value[1]
        return None

    def members(self, frame, names):
        """The object frame's last value of each of `names`, parsed (placeholders left as they are)."""
        found = {}
        for piece in self.pieces(frame):
            found.update((name, piece[name]) for name in names if name in piece)
        return found


class ChunkedBody:
    """A big body's write items, parsed piece by piece; each state kept as its text."""

    def __init__(self, structure, root, big, schema, merge, max_state_bytes):
        self.structure, self.data, self.root, self.schema = structure, structure.data, root, schema
        self.merge, self.max_state_bytes = merge, max_state_bytes
        self.frames = {id(frame): frame for frame in big}
        self.checked = set()  # ids of frames whose every piece has been parsed
        self.parser = PieceParser(self.data)
        self.state_field = schema.fields["states"].inner.schema.fields["state"]
        # The stand-in of each state whose text proves it too large: an empty object to the checks.
        self.too_large = {}

    def items(self):
        """The loaded items, states as text (None for a state too large to build), or the first problem."""
        problem, loaded = None, []
        states = None
        if self.root.open == OPEN_OBJECT:
            states = self.parser.members(self.root, ["states"]).get("states")
            self.checked.add(id(self.root))
        frame = self.frames.get(self.parser.placeholder_of(states))
        try:
            if frame is None:
                self.schema.check_states_array(type(states) is list, len(states) if type(states) is list else 0)
                self.check_all()
                return [self.load(index, item) for index, item in enumerate(states)]
            self.schema.check_states_array(frame.open == OPEN_ARRAY, self.count_elements(frame))
        except ValidationError as error:
            self.check_all()
            raise error from None
        self.checked.add(id(frame))
        for piece in self.parser.pieces(frame):
            for item in piece:
                if problem is None:
                    try:
                        loaded.append(self.load(len(loaded), item))
                    except ValidationError as error:
                        problem = error
        self.check_all()
        if problem is not None:
            raise problem
        return loaded

    def count_elements(self, frame):
        """How many elements the array frame has (0 for an object)."""
        return self.structure.elements(frame) if frame.open == OPEN_ARRAY else 0

    def load(self, index, item):
        """Item `index` loaded, its state turned to text; ValidationError with the first problem."""
        big_item = self.frames.get(self.parser.placeholder_of(item))
        if big_item is not None and big_item.open == OPEN_OBJECT:
            self.checked.add(id(big_item))
            item = self.parser.members(big_item, ITEM_FIELDS)
        elif big_item is not None:
            item = []  # an array, checked with the rest: what the item's checks say of any array
        if type(item) is dict:
            item = {name: self.stand_in(value, name) for name, value in item.items()}
        result, errors = self.schema.fields["states"].load_item(item)
        if errors:
            raise ValidationError(first_error({"states": {index: errors}}))
        state = result["state"]
        result["state"] = None if state is self.too_large else jsoncodec.dumps(state)
        return result

    def stand_in(self, value, name):
        """`value`, or for a placeholder, a value the item's checks treat as they would the real one."""
        frame = self.frames.get(self.parser.placeholder_of(value))
        if frame is None:
            return value
        if name != "state" or frame.open == OPEN_ARRAY:
            return []  # not a string, not an integer, not an object: what the checks say of any array
        max_depth = self.state_field.max_depth
        if max_depth is not None and self.structure.levels(frame) > max_depth:
            return _nested(max_depth + 1)  # too deep, as the real one is
        if self.lower_bound(frame) > self.max_state_bytes:
            return self.too_large
        self.checked.update(id(kid) for kid in self.descendants(frame))
        return jsoncodec.loads(self.data[frame.start : frame.end + 1])

    def lower_bound(self, frame):
        """Fewest bytes the state's stored text can have.

        A stored state keeps every bracket, comma, colon and quote of the text sent
        (in a string too: orjson escapes a quote as \\", and nothing else of these).
        So does a merge of a patch without a null, which only adds and replaces; one
        with a null may delete members, but never an array or object it holds: it
        keeps its brackets outside strings.
        """
        if self.merge and self.data.find(b"null", frame.start, frame.end) >= 0:
            return self.structure.brackets(frame)
        return sum(self.data.count(byte, frame.start, frame.end + 1) for byte in STORED_AS_SENT)

    def descendants(self, frame):
        """The big frames inside `frame`, and itself."""
        return [kid for kid in self.frames.values() if frame.start <= kid.start and kid.end <= frame.end]

    def check_all(self):
        """Parse every piece not parsed yet, so that invalid JSON anywhere is found before any other problem."""
        for frame in self.frames.values():
            if id(frame) not in self.checked:
                self.checked.add(id(frame))
                for _ in self.parser.pieces(frame):
                    pass


def _nested(levels):
    value = {}
    for _ in range(levels - 1):
        value = {"": value}
    return value


def load_items(data, schema, merge, max_state_bytes):
    """The body's items, each {accountId, tickerId, state (its JSON text, or None when too large), expectedVersion}.

    Raises jsoncodec.InvalidJSON, or ValidationError whose message is the first problem.
    """
    try:
        structure = None if whole_parse_is_small(data) else Structure(data)
    except TooDeep:
        if not whole_parse_is_small(data, strings_too=False):
            raise
        structure = None  # its size is in its strings, which a whole parse keeps as compact as their text
    root = None if structure is None else structure.root()
    if root is None:
        body = jsoncodec.loads(data)
        try:
            updates = schema.load(body)["states"]
        except ValidationError as error:
            raise ValidationError(first_error(error.messages)) from None
        for update in updates:
            update["state"] = jsoncodec.dumps(update["state"])
        return updates
    return ChunkedBody(structure, root, structure.big_frames(root), schema, merge, max_state_bytes).items()
