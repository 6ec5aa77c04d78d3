//! The store's typed ids as PostgreSQL `BIGINT`s, so queries bind and read them as they are
//! (and arrays of them for `= ANY($1)`), never as a bare `i64` that could be the wrong one.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

use crate::store::{MessageId, OutboxId, RequestId};

macro_rules! bigint_id {
    ($name:ident) => {
        impl Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <i64 as Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <i64 as Type<Postgres>>::compatible(ty)
            }
        }

        impl PgHasArrayType for $name {
            fn array_type_info() -> PgTypeInfo {
                <i64 as PgHasArrayType>::array_type_info()
            }
        }

        impl Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <i64 as Encode<'_, Postgres>>::encode_by_ref(&self.0, buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $name {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                <i64 as Decode<'r, Postgres>>::decode(value).map($name)
            }
        }
    };
}

bigint_id!(RequestId);
bigint_id!(MessageId);
bigint_id!(OutboxId);
