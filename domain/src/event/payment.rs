//! The payment event once validated: [`Payment`], what it asks for ([`PaymentKind`]),
//! who receives the money ([`Payee`]), how it was made ([`Channel`]), and its content
//! hash (retry or conflict).

use serde::{Deserialize, Serialize};

use crate::money::Money;

/// How a payment was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    CardPresent,
    CardNotPresent,
    Wallet,
    BankTransfer,
}

impl Channel {
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::CardPresent => "card_present",
            Channel::CardNotPresent => "card_not_present",
            Channel::Wallet => "wallet",
            Channel::BankTransfer => "bank_transfer",
        }
    }

    pub(super) fn parse(text: &str) -> Option<Channel> {
        match text {
            "card_present" => Some(Channel::CardPresent),
            "card_not_present" => Some(Channel::CardNotPresent),
            "wallet" => Some(Channel::Wallet),
            "bank_transfer" => Some(Channel::BankTransfer),
            _ => None,
        }
    }
}

/// Who receives the money: another account, or a merchant at one of its terminals, or
/// (top-ups only) the payer's own wallet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Payee {
    Account {
        account_id: String,
    },
    Merchant {
        merchant_id: String,
        terminal_id: String,
    },
    /// A top-up: the money goes into the payer's wallet.
    OwnWallet,
}

/// What a payment event asks for (the wire field `type`, default `payment`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    /// Moves the amount at once (scored).
    Payment,
    /// Reserves the amount (a hold) until captured, voided or expired (scored).
    Authorize,
    /// Posts an authorization (`original_payment_id`), fully or in part, releasing the rest.
    Capture,
    /// Releases an authorization; the amount must equal the authorized amount.
    Void,
    /// Returns (part of) a captured payment from the payee to the payer.
    Refund,
    /// A refund forced by the card network (a dispute the merchant lost).
    Chargeback,
    /// Funds the payer's wallet from outside (bank or card); no payee fields.
    TopUp,
}

impl PaymentKind {
    pub const ALL: [PaymentKind; 7] = [
        PaymentKind::Payment,
        PaymentKind::Authorize,
        PaymentKind::Capture,
        PaymentKind::Void,
        PaymentKind::Refund,
        PaymentKind::Chargeback,
        PaymentKind::TopUp,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentKind::Payment => "payment",
            PaymentKind::Authorize => "authorize",
            PaymentKind::Capture => "capture",
            PaymentKind::Void => "void",
            PaymentKind::Refund => "refund",
            PaymentKind::Chargeback => "chargeback",
            PaymentKind::TopUp => "top_up",
        }
    }

    pub(super) fn parse(text: &str) -> Option<PaymentKind> {
        PaymentKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// New money leaving a payer: fraud-scored, counted in the payer's feature windows.
    pub fn is_scored(&self) -> bool {
        matches!(self, PaymentKind::Payment | PaymentKind::Authorize)
    }

    /// Refers to an earlier payment or authorization by `original_payment_id`.
    pub fn has_original(&self) -> bool {
        matches!(self, PaymentKind::Capture | PaymentKind::Void | PaymentKind::Refund | PaymentKind::Chargeback)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Geo {
    pub lat: f64,
    pub lon: f64,
}

/// A validated payment event.
#[derive(Clone, Debug, PartialEq)]
pub struct Payment {
    pub kind: PaymentKind,
    /// Client-generated idempotency key.
    pub payment_id: String,
    /// The payment or authorization a capture, void, refund or chargeback refers to.
    pub original_payment_id: Option<String>,
    pub payer_account_id: String,
    pub payee: Payee,
    pub amount: Money,
    pub event_time_ms: i64,
    pub channel: Channel,
    pub device_id: Option<String>,
    pub geo: Option<Geo>,
}

impl Payment {
    pub fn merchant_id(&self) -> Option<&str> {
        match &self.payee {
            Payee::Merchant { merchant_id, .. } => Some(merchant_id),
            Payee::Account { .. } | Payee::OwnWallet => None,
        }
    }

    pub fn terminal_id(&self) -> Option<&str> {
        match &self.payee {
            Payee::Merchant { terminal_id, .. } => Some(terminal_id),
            Payee::Account { .. } | Payee::OwnWallet => None,
        }
    }

    /// A hash of the payment's content (not its formatting): two events with one
    /// `payment_id` and equal hashes are a retry; unequal hashes are a conflict.
    pub fn content_hash(&self) -> u64 {
        use xxhash_rust::xxh3::Xxh3;
        let mut hasher = Xxh3::new();
        let mut field = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field(self.payment_id.as_bytes());
        // A plain payment's kind is not hashed, so its hash is the same as in data
        // written before event kinds were part of the hash: retries keep matching.
        if self.kind != PaymentKind::Payment {
            field(self.kind.as_str().as_bytes());
        }
        if let Some(original) = &self.original_payment_id {
            field(original.as_bytes());
        }
        field(self.payer_account_id.as_bytes());
        match &self.payee {
            Payee::Account { account_id } => field(account_id.as_bytes()),
            Payee::Merchant { merchant_id, terminal_id } => {
                field(merchant_id.as_bytes());
                field(terminal_id.as_bytes());
            }
            Payee::OwnWallet => field(b"\0own-wallet"),
        }
        field(&self.amount.minor_units().to_le_bytes());
        field(self.amount.currency().code().as_bytes());
        field(&self.event_time_ms.to_le_bytes());
        field(self.channel.as_str().as_bytes());
        hasher.digest()
    }
}
