"""Everything the bot says to a user in its own words (not the model's, nor an article's),
in one place: to review the tone, or translate it."""

from __future__ import annotations

# -- the gate -----------------------------------------------------------------------------------
EMPTY_HINT = "Please type your question and I'll do my best to help (say 'help' for more)."
RESET_DONE = "Done: I've forgotten our conversation here. What can I help you with?"
TOO_LONG = "(Your message was longer than {limit:,} characters, so I only read the beginning.)"
SLOW_DOWN = "You're sending messages faster than I can answer. Please wait about {seconds} s."
QUOTA = (
    "You've reached today's limit of {quota} questions. It resets at midnight UTC;"
    " for anything urgent, say 'human' to reach our support team."
)
HELP = (
    "I'm {name}, {company}'s support assistant. Ask me a question in plain words "
    "and I'll answer here. Say 'reset' to make me forget this conversation."
)

# -- files attached to a question ----------------------------------------------------------------
FILE_IMAGE = "I can't read images yet, so I couldn't look at {name}."
FILE_KIND = "I can't read this kind of file yet ({name}); text, CSV, JSON, log and PDF files work."
FILE_TOO_LARGE = "{name} is too large for me to read (the limit is {limit})."
FILE_PROTECTED = "{name} is password-protected, so I couldn't read it."
FILE_BROKEN = "{name} looks damaged, so I couldn't read it."
FILE_NO_TEXT = "{name} has no text I can read (a scanned page, perhaps?)."
FILE_NOT_FETCHED = "I couldn't download {name}; please try attaching it again."
FILE_CUT = "{name} is long, so I read only its first part."
FILE_TOO_MANY = "I read only the first {count} files of a message."
FILE_RECEIVED = "I've read {names}. What would you like to know about it?"

# -- handing off --------------------------------------------------------------------------------
HANDOFF = (
    "I've asked a member of our support team to take over; they'll answer you here."
    " I'll stay quiet in this conversation until then."
)
RESUMED = "Thanks, I'm back. Ask me anything else you need."
#: On the handoff message once a staff member takes the conversation (the customer sees it).
CLAIMED = "{who} from the support team has taken this conversation."
NOT_STAFF_CLAIM = "Only the support team can take a conversation."
ALREADY_CLAIMED = "{who} has already taken this conversation."
NOT_HANDED_OFF = "This conversation is no longer waiting for a person."
#: Added to the handoff outside support hours ([handoff] hours).
OUTSIDE_HOURS = "Our team is away right now; the first person can answer from {when}."

# -- answering ----------------------------------------------------------------------------------
APOLOGY = "Sorry, something went wrong while I was answering. Please try again in a moment."
BUSY = "I'm answering a lot of questions right now. Please try again in a moment."
#: After the don't-know: what the bot can help with, and a person (a "yes" hands off).
CAN_HELP_WITH = "I can help with questions about {topics}."
OFFER_A_PERSON = "Would you like me to bring in someone from our support team? Just say yes."
EMPTY_ANSWER = "Sorry, I don't have an answer to that. Could you rephrase the question?"
CUT_TO_WINDOW = "(Your message was too long for me to read whole; I answered its beginning.)"
SHUTTING_DOWN = "(I have to stop here: the service is restarting. Please ask again in a minute.)"
STORE_DOWN = (
    "Sorry, I can't save our conversation right now, so I can't answer safely."
    " Please try again in a few minutes."
)

# -- after a restart ----------------------------------------------------------------------------
TOO_LATE = (
    "Sorry, I couldn't answer this when you asked: I was restarting. If you still need help,"
    " please ask again."
)

# -- staff reviewing what the knowledge base learns ---------------------------------------------
NOT_STAFF_SNIPPET = "Only the support team can decide what the bot learns."
SNIPPET_GONE = "This snippet no longer exists."
SNIPPET_DECIDED = "This snippet was {state} by {who}."

# -- staff reviewing drafts (to the staff member who clicked) -----------------------------------
NOT_STAFF = "Only the support team can approve, edit or reject the bot's answers."
DRAFT_GONE = "This draft no longer exists."
EMPTY_EDIT = "An edited answer needs some text."
ALREADY_DECIDED = "This answer was already {state} by {who}."
DECIDED = {
    "approved": "Approved by {who} and posted.",
    "edited": "Edited by {who} and posted.",
    "rejected": "Rejected by {who}: the customer was handed to a person.",
    "expired": "Nobody decided in time: the customer was handed to a person.",
}
